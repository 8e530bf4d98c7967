//! One connection to an upstream: the same transport as a client
//! connection ([`Conn`]: socket, two rings from the shard's pool, a wheel
//! entry), plus what a client connection does not have: where it is in
//! connecting, and the FIFO of requests whose replies it owes.

use std::collections::VecDeque;

use crate::engine::driver::Token;

use crate::engine::buffer::Ring;
use crate::engine::codec::reply::Skip;
use crate::engine::conn::Conn;
use crate::engine::timer::Millis;

/// Where an upstream connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The connect is in flight since this time.
    Connecting(Millis),
    /// Connected: requests are written and replies read.
    Ready,
}

/// A request sent (or about to be: it may still sit in the output ring)
/// whose reply this connection owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// The client's awaited reply it belongs to (a pending-table token).
    pub pending: Token,
    /// Which of that reply's calls it is.
    pub call: u32,
    /// When it was handed to the connection, in microseconds of the shard's
    /// clock (for the latency histogram and the upstream timeout).
    pub sent_us: u64,
    /// Its length (its bytes are in `UpConn::sent` while redirects are on).
    pub len: u32,
    /// How many times it was redirected to get here.
    pub hops: u8,
}

/// What a new upstream connection sends before any request (`AUTH` with
/// `--upstream-password`, `READONLY` to read from cluster replicas), and
/// the replies that let it serve. Requests are pipelined behind it: the
/// upstream answers in order, so the greeting's replies come first, and
/// if one is not `expect` the connection closes as a failed connect and
/// the requests behind it fail with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The bytes written first: one command per reply.
    pub request: Box<[u8]>,
    /// How many replies.
    pub replies: u8,
    /// The reply each must be.
    pub expect: Box<[u8]>,
}

impl Greeting {
    /// `AUTH [user] password` for a RESP upstream, accepted by `+OK`.
    pub fn auth(user: Option<&str>, password: &str) -> Greeting {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(user.map(str::as_bytes));
        args.push(password.as_bytes());
        Greeting::of(&[&args])
    }

    /// `AUTH` when `password` is given, then `READONLY` when `readonly`;
    /// `None` when neither.
    pub fn resp(credentials: Option<(Option<&str>, &str)>, readonly: bool) -> Option<Greeting> {
        let auth = credentials.map(|(user, password)| Greeting::auth(user, password));
        match (auth, readonly) {
            (auth, false) => auth,
            (None, true) => Some(Greeting::of(&[&[b"READONLY"]])),
            (Some(mut auth), true) => {
                let mut request = auth.request.into_vec();
                request.extend_from_slice(b"*1\r\n$8\r\nREADONLY\r\n");
                auth.request = request.into();
                auth.replies += 1;
                Some(auth)
            }
        }
    }

    /// The RESP commands `commands`, each accepted by `+OK`.
    fn of(commands: &[&[&[u8]]]) -> Greeting {
        let mut request = Vec::new();
        for args in commands {
            crate::engine::codec::resp::encode_command(args, &mut request);
        }
        Greeting {
            request: request.into(),
            replies: commands.len() as u8,
            expect: b"+OK\r\n"[..].into(),
        }
    }
}

/// Why an upstream connection's deadline fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The connect took longer than `--connect-timeout`.
    Connect,
    /// The oldest request waited longer than `--upstream-timeout`.
    Request,
    /// No request for `--upstream-idle-timeout`.
    Idle,
}

/// The time limits of upstream connections, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// `--connect-timeout`.
    pub connect: Millis,
    /// `--upstream-timeout`.
    pub request: Millis,
    /// `--upstream-idle-timeout`.
    pub idle: Millis,
}

/// One upstream connection.
///
/// Invariants: `outstanding` holds at most `--upstream-pipeline` entries,
/// in the order their requests were written to the output ring, which is
/// the order the upstream answers them; it is empty while `Connecting`
/// (requests wait in the lane's queue until the connection is ready).
pub struct UpConn {
    /// Socket, rings, readiness flags, wheel entry.
    pub conn: Conn,
    /// Which upstream (index in the pools).
    pub upstream: usize,
    /// Which lane of that upstream's pool.
    pub lane: usize,
    /// Connecting or ready.
    pub phase: Phase,
    /// Replies owed, oldest first.
    pub outstanding: VecDeque<Outstanding>,
    /// The input length when the last look for a whole reply found none:
    /// the next look waits for more bytes than that.
    pub scanned: usize,
    /// The oldest reply owed is larger than the input ring: its bytes are
    /// passed over as they come (the stream stays in step) and its request
    /// gets an error once its end is found.
    pub skipping: Option<Skip>,
    /// Replies of the [`Greeting`] still to come: the next replies are
    /// the greeting's, not a request's.
    pub greeting_owed: u8,
    /// With redirects on: the bytes of the requests whose replies are
    /// owed, in `outstanding`'s order, kept to send again elsewhere.
    pub sent: Option<Ring>,
    /// Redirects are on: requests are kept in `sent`.
    pub keeps_sent: bool,
}

impl UpConn {
    /// A connection to `upstream` (lane `lane`) whose connect began at
    /// `now`, owing at most `pipeline` replies at a time.
    pub fn new(conn: Conn, upstream: usize, lane: usize, pipeline: usize, now: Millis) -> UpConn {
        UpConn {
            conn,
            upstream,
            lane,
            phase: Phase::Connecting(now),
            outstanding: VecDeque::with_capacity(pipeline),
            scanned: 0,
            skipping: None,
            greeting_owed: 0,
            sent: None,
            keeps_sent: false,
        }
    }

    /// Whether a request of `len` bytes can be written now: ready, under
    /// the pipeline bound, and room in the output ring (`ring_capacity`
    /// when the connection holds no ring).
    pub fn has_room(&self, len: usize, pipeline: usize, ring_capacity: usize) -> bool {
        let free = |ring: &Option<Ring>| ring.as_ref().map_or(ring_capacity, Ring::free);
        self.phase == Phase::Ready
            && self.outstanding.len() < pipeline
            && free(&self.conn.link.output) >= len
            && (!self.keeps_sent || free(&self.sent) >= len)
    }

    /// The deadline in force and why it would fire.
    pub fn deadline(&self, limits: &Deadlines) -> (Millis, Expiry) {
        match self.phase {
            Phase::Connecting(since) => (since + limits.connect, Expiry::Connect),
            // The greeting is part of connecting.
            Phase::Ready if self.greeting_owed > 0 => {
                (self.conn.last_active + limits.connect, Expiry::Connect)
            }
            Phase::Ready => match self.outstanding.front() {
                Some(oldest) => (oldest.sent_us / 1000 + limits.request, Expiry::Request),
                None => (self.conn.last_active + limits.idle, Expiry::Idle),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = Deadlines {
            connect: 100,
            request: 1_000,
            idle: 60_000,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut up = UpConn::new(Conn::new(stream, 5), 0, 0, 4, 5);
        assert_eq!(up.deadline(&limits), (105, Expiry::Connect));
        assert!(!up.has_room(1, 4, 64));
        up.phase = Phase::Ready;
        assert_eq!(up.deadline(&limits), (60_005, Expiry::Idle));
        assert!(up.has_room(64, 4, 64));
        assert!(!up.has_room(65, 4, 64));
        up.outstanding.push_back(Outstanding {
            pending: Token(1),
            call: 0,
            sent_us: 7_000,
            len: 1,
            hops: 0,
        });
        assert_eq!(up.deadline(&limits), (1_007, Expiry::Request));
        for _ in 0..3 {
            up.outstanding.push_back(Outstanding {
                pending: Token(1),
                call: 0,
                sent_us: 9_000,
                len: 1,
                hops: 0,
            });
        }
        assert!(!up.has_room(1, 4, 64), "the pipeline is full");
        up.greeting_owed = 1;
        up.conn.last_active = 20;
        assert_eq!(up.deadline(&limits), (120, Expiry::Connect));
    }
}
