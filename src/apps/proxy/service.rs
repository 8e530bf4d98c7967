//! The service behind `holdfast proxy`: each RESP command goes to the
//! upstream that owns its key ([`crate::apps::proxy::command::route`] over a
//! ketama [`Continuum`]), is split over several and merged back
//! ([`Plan`]), is answered here (PING, ECHO, ...), or is refused with an
//! error naming why. The engine sends the calls, keeps replies in request
//! order and turns failures into [`CallError`]s; this service only says
//! what they look like in RESP.
//!
//! A client that said `HELLO 3` has its calls made in [`Dialect::Resp3`](crate::engine::service::Dialect::Resp3)
//! (on upstream connections that said `HELLO 3` too), so each reply comes
//! in RESP3 as Redis made it and is forwarded unchanged: nothing is
//! converted. A split command's parts come in the client's protocol too,
//! and what the merge writes itself (an array header, `+OK`, a count) is
//! the same in both.

use crate::apps::proxy::client::{self, NOAUTH, Session, Users};
use std::sync::Arc;

use crate::apps::proxy::cluster::slot::slot;
use crate::apps::proxy::cluster::topology::Topology;
use crate::apps::proxy::cluster::{CROSSSLOT, View};
use crate::apps::proxy::command::{
    Connection, Local, Reason, Route, local_reply, read_only, route,
};
use crate::apps::proxy::hash::{Continuum, KeyHash, RingError};
use crate::apps::proxy::split::{BAD_REPLY, Plan};
use crate::apps::proxy::watch::Watch;
use crate::config::ReadFrom;
use crate::engine::codec::resp::Args;
use crate::engine::service::{
    Answer, CallError, Context, Opened, Redirect, Reply, Service, ServiceContext, Upstream,
};

/// The reserve of every reply the proxy writes itself but PING and ECHO
/// with a message: refusals name a command cut to 32 bytes and stay under
/// 200 bytes.
const SMALL_REPLY: usize = 256;

/// A merged reply is at most its parts plus an array header this long.
const MERGE_HEADER_MAX: usize = 24;

/// The longest error this service writes for a failed call.
const ERROR_MAX: usize = 64;

/// The reply when a reply would not fit the client's ring.
const TOO_LARGE: &[u8] = b"-ERR reply too large for the connection buffer\r\n";

/// The reply to a read with `--read-from replica` for an upstream given no
/// `--upstream-replica`.
const NO_REPLICA_UPSTREAM: &[u8] =
    b"-ERR no replica serves this key's upstream (--read-from replica)\r\n";

/// Where keys go.
enum Placement {
    /// Over `--upstream`s by ketama: a key's place is its upstream's
    /// slot.
    Ketama(Ketama),
    /// Over a Redis Cluster: a key's place is its hash slot, served by
    /// the node the view says.
    Cluster(View),
}

/// Keys over the primaries by ketama; reads, when asked, to their
/// replicas (`--upstream-replica`).
struct Ketama {
    ring: Continuum,
    /// The upstream slot of each of the ring's upstreams (a reload may
    /// remove upstreams and add others: slots are not reused).
    slots: Vec<usize>,
    key_hash: KeyHash,
    /// By a primary's slot, the slots of its replicas.
    replicas: Vec<Vec<usize>>,
    /// `--read-from replica`: a read for a primary without replicas is
    /// refused rather than sent to it.
    replica_only: bool,
    /// Counts commands, so that reads take a primary's replicas in turn.
    turn: usize,
    /// Which replicas their primaries say may serve reads, when watched.
    watch: Option<Arc<Watch>>,
}

impl Ketama {
    /// The ring over `upstreams`' primaries, each with its replicas.
    fn new(
        upstreams: &[Upstream<'_>],
        key_hash: KeyHash,
        replica_only: bool,
        watch: Option<Arc<Watch>>,
    ) -> Result<Ketama, RingError> {
        let primaries: Vec<&Upstream<'_>> =
            upstreams.iter().filter(|u| u.primary.is_none()).collect();
        let names: Vec<&str> = primaries.iter().map(|u| u.name).collect();
        let ring = Continuum::new(&names, key_hash)?;
        let slot_count = upstreams.iter().map(|u| u.slot + 1).max().unwrap_or(0);
        let mut replicas = vec![Vec::new(); slot_count];
        for replica in upstreams {
            let primary = replica
                .primary
                .and_then(|name| primaries.iter().find(|p| p.name == name));
            if let Some(primary) = primary {
                replicas[primary.slot].push(replica.slot);
            }
        }
        Ok(Ketama {
            ring,
            slots: primaries.iter().map(|u| u.slot).collect(),
            key_hash,
            replicas,
            replica_only,
            turn: 0,
            watch,
        })
    }

    /// Where a read for the primary `primary` goes: one of its replicas
    /// that `reply` can call now and that its primary says is fit, taken
    /// in turn; the primary when none is (or it has none, unless
    /// `--read-from replica`).
    fn read(&self, primary: usize, reply: &Reply<'_>) -> Result<usize, &'static [u8]> {
        let group = self.replicas.get(primary).map_or(&[][..], Vec::as_slice);
        if group.is_empty() {
            return match self.replica_only {
                true => Err(NO_REPLICA_UPSTREAM),
                false => Ok(primary),
            };
        }
        let start = self.turn % group.len();
        let fit = (0..group.len())
            .map(|i| group[(start + i) % group.len()])
            .find(|&replica| {
                reply.available(replica) && self.watch.as_ref().is_none_or(|w| w.fit(replica))
            });
        Ok(fit.unwrap_or(primary))
    }
}

impl Placement {
    /// A key's place: its upstream, or its slot.
    fn place(&self, key: &[u8]) -> usize {
        match self {
            Placement::Ketama(ketama) => ketama.slots[ketama.ring.upstream(key)],
            Placement::Cluster(_) => usize::from(slot(key)),
        }
    }

    /// The upstream for a command on a place (`read`: a read-only command
    /// that may go to a replica); the error to reply when none serves it.
    fn upstream(
        &self,
        place: usize,
        read: bool,
        reply: &Reply<'_>,
    ) -> Result<usize, &'static [u8]> {
        match self {
            Placement::Ketama(ketama) if read => ketama.read(place, reply),
            Placement::Ketama(_) => Ok(place),
            Placement::Cluster(view) => view.node(place as u16, read),
        }
    }
}

/// One shard's proxy service.
pub struct Proxy {
    placement: Placement,
    /// Reused from command to command: the split of the last one.
    plan: Plan,
    /// Sub-commands and replies written here; keeps its capacity.
    scratch: Vec<u8>,
    /// Merged replies are written here before they go out.
    merged: Vec<u8>,
    /// Spare room for the list of sub-replies a merge takes (see
    /// [`recycle`]).
    replies: Vec<&'static [u8]>,
    /// The client ring's capacity: no reply may be larger.
    reply_max: usize,
    /// Who may connect (`--requirepass`, `--user`).
    users: Users,
    /// `--read-from` other than `primary`: read-only commands may go to
    /// replicas (a cluster's, or `--upstream-replica`s).
    reads_replicas: bool,
    /// Connections this shard opened, for unique `CLIENT ID`s.
    opened: u64,
    /// This shard's index and the number of shards: a client's id is
    /// `opened × shards + shard + 1`, unique in the process.
    shard: u64,
    shards: u64,
}

impl Proxy {
    /// A shard's proxy over the upstreams of the settings (validated: at
    /// least one, at most `UPSTREAMS_MAX`).
    pub fn new(context: &ServiceContext<'_>) -> Proxy {
        Proxy::watched(context, None)
    }

    /// [`Proxy::new`], its replicas' fitness kept by `watch` (see
    /// [`Watch::start`]).
    pub fn watched(context: &ServiceContext<'_>, watch: Option<Arc<Watch>>) -> Proxy {
        let config = context.config;
        let upstreams = Upstream::of_config(config);
        let replica_only = config.read_from == ReadFrom::Replica;
        let ketama = Ketama::new(&upstreams, config.key_hash, replica_only, watch)
            .expect("validated upstreams");
        Proxy::with(context, Placement::Ketama(ketama))
    }

    /// A shard's proxy in front of a Redis Cluster, whose nodes are the
    /// settings' upstreams, in `topology`'s order.
    /// Nodes a later map names are added as upstreams through the engine
    /// (`context.upstream_adder`), when it reloads.
    pub fn cluster(context: &ServiceContext<'_>, topology: Arc<Topology>) -> Proxy {
        if let Some(adder) = context.upstream_adder.clone() {
            topology.grow_with(|| Box::new(move |nodes| adder.add(nodes)));
        }
        let known = context.config.upstreams.len();
        let view = View::new(topology, context.config.read_from, known);
        Proxy::with(context, Placement::Cluster(view))
    }

    fn with(context: &ServiceContext<'_>, placement: Placement) -> Proxy {
        let config = context.config;
        let reads_replicas = config.read_from != ReadFrom::Primary;
        Proxy {
            placement,
            plan: Plan::new(),
            scratch: Vec::new(),
            merged: Vec::new(),
            replies: Vec::new(),
            reply_max: config.buffer,
            users: Users::from_config(config),
            reads_replicas,
            opened: 0,
            shard: context.shard as u64,
            shards: config.threads.max(1) as u64,
        }
    }

    /// Whether an echoed `frame` (PING msg, ECHO msg) fits a reply.
    fn echo_fits(&self, frame: &[u8]) -> bool {
        frame.len() + 32 <= self.reply_max
    }
}

impl Service for Proxy {
    type Session = Session;

    fn open(&mut self, _: &Opened, _: &mut Context<'_>) -> Session {
        self.opened += 1;
        let id = self.opened * self.shards + self.shard + 1;
        Session::new(id, !self.users.required())
    }

    fn reply_reserve(&self, _: &Session, frame: &[u8]) -> usize {
        let mut args = Args::parse(frame);
        let echoes = args.next().is_some_and(|name| {
            name.eq_ignore_ascii_case(b"PING") || name.eq_ignore_ascii_case(b"ECHO")
        });
        if echoes && self.echo_fits(frame) {
            (frame.len() + 32).max(SMALL_REPLY)
        } else {
            SMALL_REPLY
        }
    }

    fn call(
        &mut self,
        session: &mut Session,
        _: &mut Context<'_>,
        frame: &[u8],
        reply: &mut Reply<'_>,
    ) {
        let Proxy {
            placement,
            plan,
            scratch,
            users,
            reads_replicas,
            ..
        } = self;
        match placement {
            Placement::Cluster(view) => view.refresh(),
            Placement::Ketama(ketama) => ketama.turn = ketama.turn.wrapping_add(1),
        }
        let args = Args::parse(frame);
        let place = |key: &[u8]| placement.place(key);
        let route = route(args.clone(), place);
        if !session.authenticated && !route.before_auth() {
            let _ = reply.put(NOAUTH);
            return;
        }
        let cluster = matches!(placement, Placement::Cluster(_));
        let read = *reads_replicas && read_only(args.clone());
        match route {
            Route::Forward(place) => match placement.upstream(place, read, reply) {
                Ok(upstream) => reply.call_in(session.dialect, upstream, frame),
                Err(error) => {
                    let _ = reply.put(error);
                }
            },
            Route::Split(split) => {
                scratch.clear();
                plan.split(split, args, place, scratch);
                let unserved = plan
                    .subs()
                    .iter()
                    .find_map(|sub| placement.upstream(sub.upstream, read, reply).err());
                if let Some(error) = unserved {
                    let _ = reply.put(error);
                    return;
                }
                // What the answer needs to merge, held until then.
                let saved = scratch.len();
                plan.save(scratch);
                if let Err(error) = reply.keep(&scratch[saved..]) {
                    let _ = put_error(reply, error);
                    return;
                }
                for sub in plan.subs() {
                    let upstream =
                        (placement.upstream(sub.upstream, read, reply)).expect("checked");
                    reply.call_in(session.dialect, upstream, &scratch[sub.bytes.clone()]);
                }
            }
            Route::Local(local) => {
                let echoes = matches!(local, Local::Ping | Local::Echo) && args.left() > 1;
                if echoes && frame.len() + 32 > self.reply_max {
                    let _ = reply.put(TOO_LARGE);
                    return;
                }
                scratch.clear();
                local_reply(local, args, session.dialect, scratch);
                let _ = reply.put(scratch);
                if local == Local::Quit {
                    reply.close_after();
                }
            }
            Route::Connection(command) => {
                let connection = client::Connection {
                    users,
                    mode: if cluster { b"cluster" } else { b"standalone" },
                };
                scratch.clear();
                let dialect = session.dialect;
                match command {
                    Connection::Auth => connection.auth(session, args, scratch),
                    Connection::Hello => connection.hello(session, args, scratch),
                    Connection::Client => connection.client(session, args, scratch),
                }
                if session.dialect != dialect {
                    // The next calls go on other connections: none may
                    // overtake a request made before the switch.
                    reply.fence();
                }
                let _ = reply.put(scratch);
            }
            Route::Refuse(refusal) if cluster && refusal.reason == Reason::CrossUpstream => {
                let _ = reply.put(CROSSSLOT);
            }
            Route::Refuse(refusal) => {
                scratch.clear();
                refusal.write(scratch);
                let _ = reply.put(scratch);
            }
            Route::Empty => {}
        }
    }

    /// A reload changed the upstreams: keys are placed over the new ones
    /// (ketama moves only the keys of removed upstreams and those that
    /// fall on added ones). A cluster's nodes come from its topology, not
    /// from the settings (a reload refuses `upstream` with `--cluster`).
    fn upstreams(&mut self, upstreams: &[Upstream<'_>]) {
        let ketama = match &mut self.placement {
            Placement::Ketama(ketama) => ketama,
            // Nodes the topology added: the shard has their pools now.
            Placement::Cluster(view) => return view.known(upstreams.len()),
        };
        if let Some(watch) = &ketama.watch {
            watch.set_groups(upstreams);
        }
        let watch = ketama.watch.clone();
        match Ketama::new(upstreams, ketama.key_hash, ketama.replica_only, watch) {
            Ok(new) => *ketama = new,
            // Validated: 1 to UPSTREAMS_MAX upstreams of weight 1.
            Err(error) => log::error!("reload: the upstreams' ring: {error}; keeping the old"),
        }
    }

    fn answer_reserve(&self, answer: &Answer<'_>) -> usize {
        match answer_bound(answer) {
            bound if bound > self.reply_max => TOO_LARGE.len(),
            bound => bound,
        }
    }

    fn redirect(&mut self, reply: &[u8]) -> Option<Redirect> {
        match &mut self.placement {
            Placement::Cluster(view) => view.redirect(reply),
            Placement::Ketama(_) => None,
        }
    }

    fn answer(&mut self, answer: &Answer<'_>, reply: &mut Reply<'_>) {
        if let Placement::Cluster(view) = &self.placement {
            // A node that fails (or whose breaker is open), or a cluster
            // that says it is down: the map may be stale (a failover).
            let failed = (0..answer.calls()).any(|call| match answer.outcome(call) {
                Ok(reply) => reply.starts_with(b"-CLUSTERDOWN"),
                Err(error) => !matches!(error, CallError::TooLarge | CallError::NoMemory),
            });
            if failed {
                view.suspect();
            }
        }
        if answer_bound(answer) > self.reply_max {
            let _ = reply.put(TOO_LARGE);
            return;
        }
        if answer.kept().is_empty() {
            let _ = match answer.outcome(0) {
                Ok(bytes) => reply.put(bytes),
                Err(error) => put_error(reply, error),
            };
            return;
        }
        let Proxy {
            plan,
            merged,
            replies,
            ..
        } = self;
        let restored = plan.restore(answer.kept());
        debug_assert!(restored, "a kept plan restores");
        if !restored || plan.subs().len() != answer.calls() {
            let _ = reply.put(BAD_REPLY);
            return;
        }
        if (0..answer.calls()).any(|call| answer.outcome(call) == Err(CallError::TooLarge)) {
            // A part too large to hold, or the parts together.
            let _ = reply.put(TOO_LARGE);
            return;
        }
        let mut parts = recycle(std::mem::take(replies));
        for call in 0..answer.calls() {
            parts.push(
                answer
                    .outcome(call)
                    .unwrap_or_else(|error| error_reply(error)),
            );
        }
        merged.clear();
        let result = plan.merge(&parts, merged);
        parts.clear();
        *replies = recycle(parts);
        let _ = match result {
            Ok(()) => reply.put(merged),
            Err(error) => {
                log::debug!("proxy: cannot merge the replies to a split command: {error}");
                reply.put(BAD_REPLY)
            }
        };
    }
}

/// The most bytes the answer can take: a forwarded command's reply as it
/// came (or an error), or a merged one (its parts and an array header, or
/// an error).
fn answer_bound(answer: &Answer<'_>) -> usize {
    if answer.kept().is_empty() {
        answer.outcome(0).map_or(ERROR_MAX, <[u8]>::len)
    } else {
        (answer.replies_len() + MERGE_HEADER_MAX).max(ERROR_MAX)
    }
}

/// The RESP error for a failed call.
fn error_reply(error: CallError) -> &'static [u8] {
    match error {
        CallError::Unavailable => b"-ERR upstream unavailable\r\n",
        CallError::Connect => b"-ERR upstream connection failed\r\n",
        CallError::Timeout => b"-ERR upstream timed out\r\n",
        CallError::Reset => b"-ERR upstream connection lost\r\n",
        CallError::TooLarge => b"-ERR upstream reply too large for the connection buffer\r\n",
        CallError::NoMemory => b"-ERR proxy awaited-reply memory full (max-pending-bytes)\r\n",
    }
}

fn put_error(
    reply: &mut Reply<'_>,
    error: CallError,
) -> Result<(), crate::engine::service::Overflow> {
    reply.put(error_reply(error))
}

/// An empty vector of slices of any lifetime, on the memory of `spare`:
/// collecting an empty `IntoIter` into a `Vec` of a type of the same size
/// reuses its allocation, so the list of sub-replies a merge takes costs
/// no allocation once warmed up.
fn recycle<'a, 'b>(mut spare: Vec<&'a [u8]>) -> Vec<&'b [u8]> {
    spare.clear();
    spare
        .into_iter()
        .map(|_| -> &'b [u8] { unreachable!() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fit_their_reserve() {
        for error in CallError::ALL {
            assert!(error_reply(error).len() <= ERROR_MAX, "{error:?}");
        }
        assert!(BAD_REPLY.len() <= ERROR_MAX);
        assert!(TOO_LARGE.len() <= ERROR_MAX);
    }

    #[test]
    fn recycling_keeps_the_allocation() {
        let mut spare: Vec<&'static [u8]> = Vec::with_capacity(8);
        spare.push(b"x");
        let pointer = spare.as_ptr() as usize;
        let text = String::from("short-lived");
        let mut parts = recycle(spare);
        parts.push(text.as_bytes());
        assert_eq!(parts.as_ptr() as usize, pointer);
        let back: Vec<&'static [u8]> = recycle(parts);
        assert_eq!(back.capacity(), 8);
    }
}
