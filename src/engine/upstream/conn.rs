//! One connection to an upstream: the same transport as a client
//! connection ([`Conn`]: socket, two rings from the shard's pool, a wheel
//! entry), plus what a client connection does not have: where it is in
//! connecting, and the FIFO of requests whose replies it owes.

use std::collections::VecDeque;

use crate::engine::driver::Token;

use crate::engine::buffer::Ring;
use crate::engine::codec::reply::Skip;
use crate::engine::conn::Conn;
use crate::engine::service::Dialect;
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
/// `--upstream-password`, `HELLO 3` for a [`Dialect::Resp3`] connection,
/// `READONLY` to read from cluster replicas, in that order: `HELLO` before
/// `AUTH` would be refused by a server with a password), and the replies
/// that let it serve. Requests are pipelined behind it: the upstream
/// answers in order, so the greeting's replies come first, and if one is
/// not what its step expects the connection closes as a failed connect
/// and the requests behind it fail with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The bytes written first: one command per step.
    pub request: Box<[u8]>,
    /// Each command and the reply it must get, in order.
    pub steps: Box<[Step]>,
}

/// One command of a [`Greeting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its name, for the log line of a refusal.
    pub command: &'static str,
    /// The reply it must get.
    pub expect: Expect,
}

/// The reply a greeting's command must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly `+OK` (`AUTH`, `READONLY`, in either protocol).
    Ok,
    /// A RESP3 map (`HELLO 3`'s description of the server): the proof that
    /// the connection speaks RESP3 from here on. An error (`-` or `!`: a
    /// server without `HELLO`, or one refusing protocol 3) or anything
    /// else refuses it, since the replies would not be in RESP3.
    Map,
}

impl Greeting {
    /// `AUTH [user] password` for a RESP upstream, accepted by `+OK`.
    pub fn auth(user: Option<&str>, password: &str) -> Greeting {
        Greeting::resp(Some((user, password)), Dialect::Resp2, false).expect("AUTH")
    }

    /// `AUTH` when `credentials` are given, then `HELLO 3` for
    /// [`Dialect::Resp3`], then `READONLY` when `readonly`; `None` when
    /// none of them.
    pub fn resp(
        credentials: Option<(Option<&str>, &str)>,
        dialect: Dialect,
        readonly: bool,
    ) -> Option<Greeting> {
        let mut request = Vec::new();
        let mut steps = Vec::new();
        let mut command = |args: &[&[u8]], name: &'static str, expect: Expect| {
            crate::engine::codec::resp::encode_command(args, &mut request);
            steps.push(Step {
                command: name,
                expect,
            });
        };
        if let Some((user, password)) = credentials {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            args.extend(user.map(str::as_bytes));
            args.push(password.as_bytes());
            command(&args, "AUTH", Expect::Ok);
        }
        if dialect == Dialect::Resp3 {
            command(&[b"HELLO", b"3"], "HELLO 3", Expect::Map);
        }
        if readonly {
            command(&[b"READONLY"], "READONLY", Expect::Ok);
        }
        (!steps.is_empty()).then(|| Greeting {
            request: request.into(),
            steps: steps.into(),
        })
    }

    /// How many replies the greeting owes.
    pub fn replies(&self) -> u8 {
        self.steps.len() as u8
    }

    /// Checks `reply`, the one the greeting owes when it owes `owed`
    /// (this one included): `Err` names the command it refuses. A
    /// greeting that owes more than it has steps changed since it was sent
    /// (a reload gave the upstream another login): refused too, so the
    /// connection is made again.
    pub fn check(&self, owed: u8, reply: &[u8]) -> Result<(), &'static str> {
        let nth = self.steps.len().checked_sub(usize::from(owed));
        let Some(step) = nth.and_then(|nth| self.steps.get(nth)) else {
            return Err("greeting");
        };
        let accepted = match step.expect {
            Expect::Ok => reply == b"+OK\r\n",
            Expect::Map => reply.first() == Some(&b'%'),
        };
        accepted.then_some(()).ok_or(step.command)
    }
}

/// What a new connection of each [`Dialect`] sends first, by
/// [`Dialect::index`].
pub type Greetings = [Option<Greeting>; Dialect::ALL.len()];

/// The greetings of RESP connections of every dialect: `credentials`
/// (`AUTH`), `resp3` (a RESP upstream: `HELLO 3` for [`Dialect::Resp3`]),
/// `readonly` (`READONLY`).
pub fn greetings(
    credentials: Option<(Option<&str>, &str)>,
    resp3: bool,
    readonly: bool,
) -> Greetings {
    Dialect::ALL.map(|dialect| {
        let dialect = if resp3 { dialect } else { Dialect::Resp2 };
        Greeting::resp(credentials, dialect, readonly)
    })
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

    fn commands(greeting: &Greeting) -> Vec<Vec<Vec<u8>>> {
        let mut bytes = &greeting.request[..];
        let mut commands = Vec::new();
        while !bytes.is_empty() {
            // A command is an array of bulk strings: a reply walks it.
            let len = crate::engine::codec::reply::reply_len(bytes)
                .unwrap()
                .unwrap();
            let args = crate::engine::codec::resp::Args::parse(&bytes[..len]);
            commands.push(args.map(<[u8]>::to_vec).collect());
            bytes = &bytes[len..];
        }
        commands
    }

    #[test]
    fn a_resp3_greeting_logs_in_then_says_hello_then_readonly() {
        let greeting = Greeting::resp(Some((Some("proxy"), "pw")), Dialect::Resp3, true).unwrap();
        let expected: Vec<Vec<Vec<u8>>> = vec![
            vec![b"AUTH".to_vec(), b"proxy".to_vec(), b"pw".to_vec()],
            vec![b"HELLO".to_vec(), b"3".to_vec()],
            vec![b"READONLY".to_vec()],
        ];
        assert_eq!(commands(&greeting), expected);
        assert_eq!(greeting.replies(), 3);
        let hello = Greeting::resp(None, Dialect::Resp3, false).unwrap();
        assert_eq!(commands(&hello), [vec![b"HELLO".to_vec(), b"3".to_vec()]]);
        assert_eq!(Greeting::resp(None, Dialect::Resp2, false), None);
        let plain = greetings(Some((None, "pw")), true, false);
        assert_eq!(plain[Dialect::Resp2.index()].as_ref().unwrap().replies(), 1);
        assert_eq!(plain[Dialect::Resp3.index()].as_ref().unwrap().replies(), 2);
        // An upstream that is not RESP is never sent HELLO.
        let line = greetings(None, false, false);
        assert_eq!(line, [None, None]);
    }

    #[test]
    fn each_greeting_reply_is_checked_for_what_its_command_gets() {
        let greeting = Greeting::resp(Some((None, "pw")), Dialect::Resp3, true).unwrap();
        let hello = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
            $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
            $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        // Owing 3: AUTH's reply; 2: HELLO's; 1: READONLY's.
        assert_eq!(greeting.check(3, b"+OK\r\n"), Ok(()));
        assert_eq!(greeting.check(2, hello), Ok(()));
        assert_eq!(greeting.check(1, b"+OK\r\n"), Ok(()));
        let refused: [(u8, &[u8], &str); 7] = [
            (3, b"-WRONGPASS invalid username-password pair\r\n", "AUTH"),
            (3, hello, "AUTH"),
            // A server without HELLO, one refusing RESP3, one that answers
            // in RESP2: its replies would not be RESP3.
            (2, b"-ERR unknown command 'HELLO'\r\n", "HELLO 3"),
            (2, b"-NOPROTO unsupported protocol version\r\n", "HELLO 3"),
            (2, b"!8\r\nNOPROTO!\r\n", "HELLO 3"),
            (2, b"*14\r\n", "HELLO 3"),
            (
                1,
                b"-ERR This instance has cluster support disabled\r\n",
                "READONLY",
            ),
        ];
        for (owed, reply, command) in refused {
            assert_eq!(
                greeting.check(owed, reply),
                Err(command),
                "{:?}",
                reply.escape_ascii()
            );
        }
        // Owing more than it has: it changed under a reload.
        assert_eq!(greeting.check(4, b"+OK\r\n"), Err("greeting"));
        assert_eq!(greeting.check(0, b"+OK\r\n"), Err("greeting"));
    }

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
