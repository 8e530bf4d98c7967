//! Splitting a multi-key command ([`Split`]) over the upstreams that own
//! its keys, and merging their replies into the one reply the client
//! expects, in the client's key order.
//!
//! ```text
//! MGET a b c d     a, c on upstream 0; b, d on upstream 1
//!   sub 0 → upstream 0: MGET a c     reply *2 $1 A $-1
//!   sub 1 → upstream 1: MGET b d     reply *2 $1 B $1 D
//!   merged:             *4 $1 A $1 B $-1 $1 D
//! ```
//!
//! MGET becomes an array in key order, each value as its upstream sent it
//! (a missing key's `$-1`, or `_` from an upstream connection that speaks
//! RESP3 for a RESP3 client); DEL, UNLINK, EXISTS and TOUCH the sum of the
//! counts; MSET `+OK` when every upstream said so. What the merge writes
//! itself (the array header, `+OK`, the count) is the same in RESP2 and
//! RESP3, so a merged reply is in the protocol its parts came in. If any
//! upstream answered with an error (`-ERR upstream unavailable` included),
//! the client gets the first one, in the order of the sub-commands (that
//! of the keys' first appearance). As with twemproxy, MSET and DEL are then
//! atomic per upstream, not as a whole: some keys may be set or deleted.
//!
//! A [`Plan`] is reused from command to command; its vectors keep their
//! capacity, so once warmed up it does not allocate, and the sub-commands
//! are written straight into the caller's buffer (the RESP headers by hand:
//! `resp::encode_command` would format each length into a fresh `String`;
//! the tests check that both write the same bytes).

use std::ops::Range;

use super::command::{Split, push_bulk, push_header};
use crate::engine::codec::reply::{Element, ReplyError, next};
use crate::engine::codec::resp::Args;

/// The client's reply when an upstream's reply cannot be merged (the
/// engine also closes that upstream connection: its stream is out of step).
pub const BAD_REPLY: &[u8] = b"-ERR bad reply from upstream\r\n";

/// One sub-command: the keys of the client's command that one upstream
/// owns, in their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sub {
    /// The upstream to send it to.
    pub upstream: usize,
    /// Where it is in the buffer given to [`Plan::split`].
    pub bytes: Range<usize>,
    /// How many keys it carries.
    pub keys: usize,
}

/// A sub-reply that does not fit the sub-command it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeError {
    /// The index of the sub-command (and of its upstream in
    /// [`Plan::subs`]) whose reply is at fault.
    pub sub: usize,
    /// `Some` when the bytes are not RESP at all; `None` when they are
    /// RESP but not the reply the command calls for (a wrong type, count
    /// or value, an incomplete or over-long reply).
    pub invalid: Option<ReplyError>,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.invalid {
            Some(error) => write!(f, "sub-command {}: {error}", self.sub),
            None => write!(f, "sub-command {}: unexpected reply", self.sub),
        }
    }
}

impl std::error::Error for MergeError {}

/// How one split command was spread over upstreams.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    split: Option<Split>,
    /// The sub-commands, in the order of their first key.
    subs: Vec<Sub>,
    /// Per key of the client's command, in order: its sub-command.
    owners: Vec<usize>,
    /// While splitting, per upstream index: its sub-command, if any.
    by_upstream: Vec<Option<usize>>,
    /// While merging, per sub-command: where its next element starts.
    cursors: Vec<usize>,
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Plans the command `args` (name first), which [`route`] routed to
    /// `Route::Split(split)`, and appends one sub-command per upstream
    /// that owns some of its keys to `out` (see [`Plan::subs`]). `place`
    /// maps a key to its upstream, as it did for [`route`].
    ///
    /// Cost: one pass over the keys to place them, then one per
    /// sub-command to write it, so O(keys × upstreams used), at most
    /// `ARGS_MAX` keys.
    ///
    /// [`route`]: super::command::route
    pub fn split(
        &mut self,
        split: Split,
        mut args: Args<'_>,
        place: impl Fn(&[u8]) -> usize,
        out: &mut Vec<u8>,
    ) {
        self.split = Some(split);
        self.subs.clear();
        self.owners.clear();
        let stride = split.stride();
        args.next(); // the name
        let keys = args.clone().step_by(stride);
        for key in keys.clone() {
            // A place is an upstream (at most UPSTREAMS_MAX) or, in front
            // of a cluster, a hash slot (at most 16384): both fit a u16.
            let upstream = place(key);
            debug_assert!(upstream < usize::from(u16::MAX), "placed at {upstream}");
            if self.by_upstream.len() <= upstream {
                self.by_upstream.resize(upstream + 1, None);
            }
            let sub = *self.by_upstream[upstream].get_or_insert_with(|| {
                self.subs.push(Sub {
                    upstream,
                    bytes: 0..0,
                    keys: 0,
                });
                self.subs.len() - 1
            });
            self.subs[sub].keys += 1;
            self.owners.push(sub);
        }
        for (index, sub) in self.subs.iter_mut().enumerate() {
            self.by_upstream[sub.upstream] = None;
            let start = out.len();
            push_header(out, b'*', (1 + sub.keys * stride) as i64);
            push_bulk(out, split.name());
            let mut args = args.clone();
            for &owner in &self.owners {
                for _ in 0..stride {
                    let arg = args.next().unwrap_or_default();
                    if owner == index {
                        push_bulk(out, arg);
                    }
                }
            }
            sub.bytes = start..out.len();
        }
        debug_assert!(self.by_upstream.iter().all(Option::is_none));
    }

    /// The sub-commands of the last [`Plan::split`], in order.
    pub fn subs(&self) -> &[Sub] {
        &self.subs
    }

    /// Appends what [`Plan::merge`] needs of this plan to `out`: the
    /// command's code, the sub-commands' upstreams, then each key's
    /// sub-command, two bytes each. An awaited reply holds this until its
    /// replies are in, rather than the client's command: an MGET of 4096
    /// keys saves 8 KiB whatever the keys' length.
    pub fn save(&self, out: &mut Vec<u8>) {
        let split = self.split.expect("save after split");
        out.push(split.code());
        let pairs = std::iter::once(self.subs.len())
            .chain(self.subs.iter().map(|sub| sub.upstream))
            .chain(self.owners.iter().copied());
        for value in pairs {
            // Sub-commands and places number at most 16384.
            out.extend_from_slice(&(value as u16).to_le_bytes());
        }
    }

    /// Makes this plan the one [`Plan::save`] wrote into `saved`, ready
    /// to [`Plan::merge`] (the sub-commands' bytes are not restored:
    /// [`Sub::bytes`] are empty). False for bytes no save wrote.
    pub fn restore(&mut self, saved: &[u8]) -> bool {
        self.subs.clear();
        self.owners.clear();
        let Some((&code, rest)) = saved.split_first() else {
            return false;
        };
        self.split = Split::from_code(code);
        let mut values = rest
            .chunks_exact(2)
            .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])));
        let count = values.next().unwrap_or(0);
        for upstream in values.by_ref().take(count) {
            self.subs.push(Sub {
                upstream,
                bytes: 0..0,
                keys: 0,
            });
        }
        for owner in values {
            let Some(sub) = self.subs.get_mut(owner) else {
                return false;
            };
            sub.keys += 1;
            self.owners.push(owner);
        }
        self.split.is_some()
            && rest.len() % 2 == 0
            && self.subs.len() == count
            && self.subs.iter().all(|sub| sub.keys > 0)
    }

    /// Appends the client's reply to `out`, from `replies`: one whole
    /// reply per sub-command, in [`Plan::subs`] order, each exactly as its
    /// upstream sent it. On error `out` is left as it was.
    ///
    /// Panics if `replies` does not have one reply per sub-command (a bug
    /// of the caller, not of an upstream).
    pub fn merge(&mut self, replies: &[&[u8]], out: &mut Vec<u8>) -> Result<(), MergeError> {
        let split = self.split.expect("merge before split");
        assert_eq!(replies.len(), self.subs.len(), "one reply per sub-command");
        let start = out.len();
        let result = self.merge_into(split, replies, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn merge_into(
        &mut self,
        split: Split,
        replies: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), MergeError> {
        let unexpected = |sub| MergeError { sub, invalid: None };
        self.cursors.clear();
        let mut sum: i64 = 0;
        // First the head of each reply: an error wins, then the shape.
        for (sub, reply) in replies.iter().enumerate() {
            let (head, used) = read(reply, 0, sub)?;
            match (split, head) {
                (_, Element::Error(_) | Element::BlobError(_)) => {
                    if reply.len() != used {
                        return Err(unexpected(sub));
                    }
                    out.extend_from_slice(reply);
                    return Ok(());
                }
                (Split::Mget, Element::Array(n)) if n == self.subs[sub].keys => {}
                (Split::Mset, Element::Simple(b"OK")) => {}
                (
                    Split::Del | Split::Unlink | Split::Exists | Split::Touch,
                    Element::Integer(n),
                ) => {
                    sum = sum.saturating_add(n);
                }
                _ => return Err(unexpected(sub)),
            }
            if split != Split::Mget && reply.len() != used {
                return Err(unexpected(sub));
            }
            self.cursors.push(used);
        }
        match split {
            Split::Mset => out.extend_from_slice(b"+OK\r\n"),
            Split::Mget => {
                push_header(out, b'*', self.owners.len() as i64);
                for &sub in &self.owners {
                    let reply = replies[sub];
                    let at = self.cursors[sub];
                    match read(reply, at, sub)? {
                        (Element::Bulk(_) | Element::Nil, used) => {
                            out.extend_from_slice(&reply[at..at + used]);
                            self.cursors[sub] = at + used;
                        }
                        _ => return Err(unexpected(sub)),
                    }
                }
                if let Some(sub) = (0..replies.len()).find(|&s| self.cursors[s] != replies[s].len())
                {
                    return Err(unexpected(sub));
                }
            }
            _ => push_header(out, b':', sum),
        }
        Ok(())
    }
}

/// The element of `reply` at `at`, and its length; an incomplete reply is
/// as unexpected as a wrong one (the caller gives whole replies).
fn read(reply: &[u8], at: usize, sub: usize) -> Result<(Element<'_>, usize), MergeError> {
    match next(&reply[at..]) {
        Ok(Some(element)) => Ok(element),
        Ok(None) => Err(MergeError { sub, invalid: None }),
        Err(error) => Err(MergeError {
            sub,
            invalid: Some(error),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::resp::encode_command;
    use proptest::prelude::*;
    use std::collections::HashMap;

    type Store = HashMap<Vec<u8>, Vec<u8>>;

    /// Keys go to the upstream named by their first byte's digit.
    fn place(key: &[u8]) -> usize {
        key.first()
            .filter(|b| b.is_ascii_digit())
            .map_or(0, |b| usize::from(b - b'0'))
    }

    fn frame(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        out
    }

    /// Splits `args` with `place`; the plan and the sub-commands' bytes.
    fn split_with(args: &[&[u8]], place: impl Fn(&[u8]) -> usize) -> (Plan, Vec<Vec<u8>>) {
        let split = match args[0] {
            b"MGET" => Split::Mget,
            b"MSET" => Split::Mset,
            b"DEL" => Split::Del,
            b"EXISTS" => Split::Exists,
            b"UNLINK" => Split::Unlink,
            _ => Split::Touch,
        };
        let mut plan = Plan::new();
        let mut out = b"before".to_vec();
        plan.split(split, Args::parse(&frame(args)), place, &mut out);
        let subs = plan
            .subs()
            .iter()
            .map(|s| out[s.bytes.clone()].to_vec())
            .collect();
        (plan, subs)
    }

    /// A fake upstream serving one sub-command.
    fn serve(store: &mut Store, command: &[u8]) -> Vec<u8> {
        let mut args = Args::parse(command);
        let name = args.next().unwrap();
        let mut out = Vec::new();
        match name {
            b"MGET" => {
                push_header(&mut out, b'*', args.left() as i64);
                for key in args {
                    match store.get(key) {
                        Some(value) => push_bulk(&mut out, value),
                        None => out.extend(b"$-1\r\n"),
                    }
                }
            }
            b"MSET" => {
                while let (Some(key), Some(value)) = (args.next(), args.next()) {
                    store.insert(key.to_vec(), value.to_vec());
                }
                out.extend(b"+OK\r\n");
            }
            b"EXISTS" | b"TOUCH" => {
                let n = args.filter(|k| store.contains_key(*k)).count();
                push_header(&mut out, b':', n as i64);
            }
            _ => {
                let n = args.filter(|k| store.remove(*k).is_some()).count();
                push_header(&mut out, b':', n as i64);
            }
        }
        out
    }

    /// Splits, serves each sub-command on its fake upstream, merges.
    fn run(stores: &mut [Store], args: &[&[u8]], place: impl Fn(&[u8]) -> usize) -> Vec<u8> {
        let (mut plan, subs) = split_with(args, place);
        let replies: Vec<Vec<u8>> = plan
            .subs()
            .to_vec()
            .iter()
            .zip(&subs)
            .map(|(sub, command)| serve(&mut stores[sub.upstream], command))
            .collect();
        let replies: Vec<&[u8]> = replies.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        plan.merge(&replies, &mut out).unwrap();
        out
    }

    fn merged(plan: &mut Plan, replies: &[&[u8]]) -> Result<Vec<u8>, MergeError> {
        let mut out = b"kept".to_vec();
        let result = plan.merge(replies, &mut out);
        if result.is_err() {
            assert_eq!(out, b"kept", "out changed on error");
        }
        result.map(|()| out[4..].to_vec())
    }

    #[test]
    fn mget_is_split_per_upstream_in_key_order() {
        let (plan, subs) = split_with(&[b"MGET", b"0a", b"1b", b"0c", b"1d"], place);
        assert_eq!(
            subs,
            [
                frame(&[b"MGET", b"0a", b"0c"]),
                frame(&[b"MGET", b"1b", b"1d"])
            ]
        );
        let first = &plan.subs()[0];
        assert_eq!((first.upstream, first.keys, first.bytes.start), (0, 2, 6));
        assert_eq!(plan.subs()[1].upstream, 1);
    }

    #[test]
    fn mget_replies_merge_back_in_key_order() {
        let (mut plan, _) = split_with(&[b"MGET", b"0a", b"1b", b"0c", b"1d"], place);
        let replies: [&[u8]; 2] = [b"*2\r\n$1\r\nA\r\n$-1\r\n", b"*2\r\n$1\r\nB\r\n$1\r\nD\r\n"];
        assert_eq!(
            merged(&mut plan, &replies).unwrap(),
            b"*4\r\n$1\r\nA\r\n$1\r\nB\r\n$-1\r\n$1\r\nD\r\n"
        );
    }

    #[test]
    fn resp3_parts_merge_into_a_resp3_reply() {
        let (mut plan, _) = split_with(&[b"MGET", b"0a", b"1b", b"0c", b"1d"], place);
        let replies: [&[u8]; 2] = [b"*2\r\n$1\r\nA\r\n_\r\n", b"*2\r\n_\r\n$1\r\nD\r\n"];
        assert_eq!(
            merged(&mut plan, &replies).unwrap(),
            b"*4\r\n$1\r\nA\r\n_\r\n_\r\n$1\r\nD\r\n"
        );
        let (mut plan, _) = split_with(&[b"DEL", b"0a", b"1b"], place);
        assert_eq!(
            merged(&mut plan, &[b":1\r\n", b"!9\r\nERR oops!\r\n"]).unwrap(),
            b"!9\r\nERR oops!\r\n",
            "a blob error is an error"
        );
        let (mut plan, _) = split_with(&[b"MGET", b"0a", b"1b"], place);
        for bad in [
            &b"%1\r\n$1\r\na\r\n_\r\n"[..],
            b"*1\r\n#t\r\n",
            b"*1\r\n,1.5\r\n",
        ] {
            assert!(
                merged(&mut plan, &[bad, b"*1\r\n_\r\n"]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mset_keeps_pairs_together() {
        let (mut plan, subs) = split_with(&[b"MSET", b"2k", b"x", b"0k", b"y", b"2j", b"z"], place);
        assert_eq!(
            subs,
            [
                frame(&[b"MSET", b"2k", b"x", b"2j", b"z"]),
                frame(&[b"MSET", b"0k", b"y"])
            ]
        );
        assert_eq!(
            merged(&mut plan, &[b"+OK\r\n", b"+OK\r\n"]).unwrap(),
            b"+OK\r\n"
        );
        assert_eq!(
            merged(&mut plan, &[b"+OK\r\n", b"-OOM no room\r\n"]).unwrap(),
            b"-OOM no room\r\n"
        );
    }

    #[test]
    fn counts_are_summed() {
        for name in [&b"DEL"[..], b"UNLINK", b"EXISTS", b"TOUCH"] {
            let (mut plan, _) = split_with(&[name, b"1a", b"2b", b"3c", b"1d"], place);
            assert_eq!(plan.subs().len(), 3);
            assert_eq!(
                merged(&mut plan, &[b":2\r\n", b":0\r\n", b":1\r\n"]).unwrap(),
                b":3\r\n"
            );
        }
    }

    #[test]
    fn the_first_error_is_the_reply() {
        let (mut plan, _) = split_with(&[b"MGET", b"0a", b"1b", b"2c"], place);
        let replies: [&[u8]; 3] = [
            b"*1\r\n$-1\r\n",
            b"-ERR upstream unavailable\r\n",
            b"-ERR other\r\n",
        ];
        assert_eq!(
            merged(&mut plan, &replies).unwrap(),
            b"-ERR upstream unavailable\r\n"
        );
        let (mut plan, _) = split_with(&[b"DEL", b"0a", b"1b"], place);
        assert_eq!(
            merged(&mut plan, &[b"-LOADING wait\r\n", b":1\r\n"]).unwrap(),
            b"-LOADING wait\r\n"
        );
    }

    #[test]
    fn replies_that_do_not_fit_are_rejected() {
        let (mut plan, _) = split_with(&[b"MGET", b"0a", b"0b", b"1c"], place);
        let ok: &[u8] = b"*1\r\n$1\r\nC\r\n";
        let cases: [(&[u8], Option<ReplyError>); 7] = [
            (b"*1\r\n$1\r\nA\r\n", None),                           // too few values
            (b"*3\r\n$-1\r\n$-1\r\n$-1\r\n", None),                 // too many
            (b"*2\r\n:1\r\n$-1\r\n", None),                         // not a value
            (b"*2\r\n$-1\r\n$-1\r\n+OK\r\n", None),                 // trailing bytes
            (b"*2\r\n$-1\r\n$1\r\n", None),                         // cut short
            (b":2\r\n", None),                                      // wrong type
            (b"*2\r\n$-1\r\n$1\r\nAB\r\n", Some(ReplyError::Crlf)), // not RESP
        ];
        for (bad, invalid) in cases {
            let error = merged(&mut plan, &[bad, ok]).unwrap_err();
            assert_eq!(
                error,
                MergeError { sub: 0, invalid },
                "{:?}",
                bad.escape_ascii()
            );
        }
        let (mut plan, _) = split_with(&[b"MSET", b"0a", b"v", b"1b", b"v"], place);
        assert!(merged(&mut plan, &[b"+OK\r\n", b"+QUEUED\r\n"]).is_err());
        assert!(merged(&mut plan, &[b"+OK\r\n+OK\r\n", b"+OK\r\n"]).is_err());
        assert!(merged(&mut plan, &[b"-ERR x\r\n-ERR y\r\n", b"+OK\r\n"]).is_err());
    }

    #[test]
    fn repeated_keys_keep_their_places() {
        let mut stores = vec![Store::new(), Store::new()];
        run(&mut stores, &[b"MSET", b"0a", b"x", b"1b", b"y"], place);
        assert_eq!(
            run(
                &mut stores,
                &[b"MGET", b"1b", b"0a", b"1b", b"0z", b"0a"],
                place
            ),
            b"*5\r\n$1\r\ny\r\n$1\r\nx\r\n$1\r\ny\r\n$-1\r\n$1\r\nx\r\n"
        );
        assert_eq!(
            run(&mut stores, &[b"EXISTS", b"0a", b"0a", b"1b", b"1q"], place),
            b":3\r\n"
        );
    }

    #[test]
    fn a_saved_plan_merges_as_the_plan() {
        let (plan, _) = split_with(&[b"MGET", b"0a", b"1b", b"0c", b"3d", b"1e"], place);
        let mut saved = b"before".to_vec();
        plan.save(&mut saved);
        assert_eq!(saved.len(), 6 + 1 + 2 * (1 + 3 + 5));
        // A plan in use before is fully replaced.
        let (mut restored, _) = split_with(&[b"DEL", b"7x"], place);
        assert!(restored.restore(&saved[6..]));
        let upstreams = |plan: &Plan| -> Vec<(usize, usize)> {
            plan.subs().iter().map(|s| (s.upstream, s.keys)).collect()
        };
        assert_eq!(upstreams(&restored), upstreams(&plan));
        assert_eq!(upstreams(&restored), [(0, 2), (1, 2), (3, 1)]);
        let replies: [&[u8]; 3] = [
            b"*2\r\n$1\r\nA\r\n$1\r\nC\r\n",
            b"*2\r\n$1\r\nB\r\n$-1\r\n",
            b"*1\r\n$1\r\nD\r\n",
        ];
        assert_eq!(
            merged(&mut restored, &replies).unwrap(),
            b"*5\r\n$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n$1\r\nD\r\n$-1\r\n"
        );
        for bad in [
            &b""[..],
            b"\x09",
            b"\x00\x01",
            b"\x00\x01\x00\x00\x00\x01\x00",
        ] {
            assert!(!restored.restore(bad), "{:?}", bad.escape_ascii());
        }
    }

    #[test]
    fn a_plan_is_reused() {
        let mut plan = Plan::new();
        let mut out = Vec::new();
        let big = frame(&[b"MGET", b"0a", b"1b", b"2c", b"3d"]);
        plan.split(Split::Mget, Args::parse(&big), place, &mut out);
        assert_eq!(plan.subs().len(), 4);
        out.clear();
        let small = frame(&[b"DEL", b"3a", b"3b"]);
        plan.split(Split::Del, Args::parse(&small), place, &mut out);
        assert_eq!(plan.subs().len(), 1);
        assert_eq!(out, small);
        assert_eq!(merged(&mut plan, &[b":2\r\n"]).unwrap(), b":2\r\n");
    }

    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..6)
    }

    proptest! {
        #[test]
        fn split_mget_equals_a_lookup_in_the_model(
            upstreams in 1usize..6,
            data in prop::collection::vec((arb_key(), arb_key()), 0..30),
            wanted in prop::collection::vec(arb_key(), 1..30),
        ) {
            let ring = crate::apps::proxy::hash::Continuum::new(
                &(0..upstreams).map(|i| format!("10.0.0.{i}:6379")).collect::<Vec<_>>(),
                crate::apps::proxy::hash::KeyHash::Murmur,
            ).unwrap();
            let place = |key: &[u8]| ring.upstream(key);
            let mut model = Store::new();
            let mut stores = vec![Store::new(); upstreams];
            for (key, value) in &data {
                model.insert(key.clone(), value.clone());
                stores[place(key)].insert(key.clone(), value.clone());
            }
            let mut command: Vec<&[u8]> = vec![b"MGET"];
            command.extend(wanted.iter().map(Vec::as_slice));
            let mut expected = Vec::new();
            push_header(&mut expected, b'*', wanted.len() as i64);
            for key in &wanted {
                match model.get(key) {
                    Some(value) => push_bulk(&mut expected, value),
                    None => expected.extend(b"$-1\r\n"),
                }
            }
            prop_assert_eq!(run(&mut stores, &command, place), expected);
            // Every sub-command reads back as the keys it was given.
            let (plan, subs) = split_with(&command, place);
            for (sub, bytes) in plan.subs().iter().zip(&subs) {
                let keys: Vec<&[u8]> = Args::parse(bytes).skip(1).collect();
                prop_assert_eq!(keys.len(), sub.keys);
                prop_assert!(keys.iter().all(|k| place(k) == sub.upstream));
            }
        }

        #[test]
        fn split_mset_then_del_agree_with_the_model(
            upstreams in 1usize..6,
            pairs in prop::collection::vec((arb_key(), arb_key()), 1..20),
            gone in prop::collection::vec(arb_key(), 1..20),
        ) {
            let place = |key: &[u8]| key.iter().map(|&b| usize::from(b)).sum::<usize>() % upstreams;
            let mut stores = vec![Store::new(); upstreams];
            let mut command: Vec<&[u8]> = vec![b"MSET"];
            for (key, value) in &pairs {
                command.push(key);
                command.push(value);
            }
            prop_assert_eq!(run(&mut stores, &command, place), b"+OK\r\n");
            let model: Store = pairs.iter().cloned().collect();
            for (key, value) in &model {
                prop_assert_eq!(stores[place(key)].get(key), Some(value));
            }
            let mut command: Vec<&[u8]> = vec![b"DEL"];
            command.extend(gone.iter().map(Vec::as_slice));
            let unique: std::collections::HashSet<&Vec<u8>> = gone.iter().collect();
            let deleted = unique.iter().filter(|k| model.contains_key(**k)).count();
            prop_assert_eq!(run(&mut stores, &command, place), format!(":{deleted}\r\n").into_bytes());
        }

        #[test]
        fn any_replies_merge_or_fail_without_panic(
            replies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 3),
        ) {
            for name in [&b"MGET"[..], b"MSET", b"DEL"] {
                let args: Vec<&[u8]> = if name == b"MSET" {
                    vec![name, b"0a", b"v", b"1b", b"v", b"2c", b"v"]
                } else {
                    vec![name, b"0a", b"1b", b"2c"]
                };
                let (mut plan, _) = split_with(&args, place);
                let replies: Vec<&[u8]> = replies.iter().map(Vec::as_slice).collect();
                let _ = merged(&mut plan, &replies);
            }
        }
    }
}
