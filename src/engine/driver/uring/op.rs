//! What a completion is about: every operation's `user_data` names its
//! kind, the connection slot and generation it belongs to, and an
//! activation that changes on each re-arm, so every value in flight is
//! unique and a cancel hits exactly one operation (docs/io_uring.md,
//! "user_data"). The [`Tracker`] checks, in debug builds, that each
//! operation gets exactly one final completion.

use crate::engine::driver::Token;

/// The kind of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The listener's multishot accept (ring-wide).
    Accept = 1,
    /// The read posted on the shard's eventfd (ring-wide).
    Wake = 2,
    /// A connection's multishot receive.
    Recv = 3,
    /// A connection's send.
    Send = 4,
    /// A cancel aimed at one of a connection's operations.
    Cancel = 5,
    /// A cancel aimed at a ring-wide operation.
    CancelRing = 6,
    /// An upstream connection's connect.
    Connect = 7,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Accept,
            2 => Kind::Wake,
            3 => Kind::Recv,
            4 => Kind::Send,
            5 => Kind::Cancel,
            6 => Kind::CancelRing,
            7 => Kind::Connect,
            _ => return None,
        })
    }
}

/// Slot value of ring-wide operations (no connection has it: the table's
/// slots stay below [`SLOT_MAX`]).
pub const RING_SLOT: u32 = u32::MAX;
/// Connection slots stay below this. The field is 32 bits wide, so that
/// every slot a connection table can hand out (below 2^31, client `2s` and
/// upstream `2s + 1`) fits: `--max-conns` (at most 10,000,000) never meets
/// it. (At 24 bits it stopped at 8,388,607 slots, and a shard holding more
/// connections panicked.)
pub const SLOT_MAX: usize = RING_SLOT as usize;

/// A decoded `user_data`: `kind:4 | activation:8 | generation:20 | slot:32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// What the operation is.
    pub kind: Kind,
    /// Bumped on every re-arm of the same kind on the same connection.
    pub activation: u8,
    /// The low 20 bits of the connection token's generation.
    pub generation: u32,
    /// The connection's slot, or [`RING_SLOT`].
    pub slot: u32,
}

impl Op {
    /// The operation `kind` for the connection `token`.
    pub fn conn(kind: Kind, token: Token, activation: u8) -> Op {
        let (slot, generation) = split(token);
        Op {
            kind,
            activation,
            generation,
            slot,
        }
    }

    /// A ring-wide operation.
    pub fn ring(kind: Kind, activation: u8) -> Op {
        Op {
            kind,
            activation,
            generation: 0,
            slot: RING_SLOT,
        }
    }

    /// The 64-bit value the kernel carries.
    pub fn encode(self) -> u64 {
        (self.kind as u64) << 60
            | (self.activation as u64) << 52
            | (self.generation as u64 & GENERATION_MASK) << 32
            | self.slot as u64
    }

    /// The operation a completion names, if its kind is known.
    pub fn decode(user_data: u64) -> Option<Op> {
        Some(Op {
            kind: Kind::from_u8((user_data >> 60) as u8)?,
            activation: (user_data >> 52) as u8,
            generation: ((user_data >> 32) & GENERATION_MASK) as u32,
            slot: user_data as u32,
        })
    }

    /// Whether this operation belongs to `token`.
    pub fn is_for(self, token: Token) -> bool {
        (self.slot, self.generation) == split(token)
    }
}

/// The bits of a token's generation that `user_data` keeps: a slot's
/// operations have all completed before it is reused, so the generation
/// only has to tell a stale cancel from a live operation, and 2^20 reuses
/// of one slot apart is far enough.
const GENERATION_MASK: u64 = 0xf_ffff;

/// A connection token's slot in `user_data` ([`Token::index`]: client
/// table slot `s` at `2s`, upstream slot `s` at `2s + 1`; the driver keeps
/// the two kinds' state in two vectors) and the low 20 bits of its
/// generation.
pub fn split(token: Token) -> (u32, u32) {
    let generation = (token.generation() as u64 & GENERATION_MASK) as u32;
    (token.index() as u32, generation)
}

/// Debug builds: the set of operations in flight, checked on every submit
/// and completion. Release builds: nothing (every method is empty).
#[derive(Debug)]
pub struct Tracker {
    #[cfg(debug_assertions)]
    live: std::collections::HashSet<u64>,
    #[cfg(debug_assertions)]
    submitted: u64,
    #[cfg(debug_assertions)]
    finals: u64,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            // Sized so that a steady load does not grow it (the allocation
            // test runs debug builds).
            #[cfg(debug_assertions)]
            live: std::collections::HashSet::with_capacity(4096),
            #[cfg(debug_assertions)]
            submitted: 0,
            #[cfg(debug_assertions)]
            finals: 0,
        }
    }
}

impl Tracker {
    /// An operation was pushed to the submission queue: it must not be in
    /// flight already (its user_data would be ambiguous).
    pub fn submitted(&mut self, user_data: u64) {
        #[cfg(debug_assertions)]
        {
            self.submitted += 1;
            assert!(
                self.live.insert(user_data),
                "io_uring: {:?} submitted while already in flight",
                Op::decode(user_data)
            );
        }
        #[cfg(not(debug_assertions))]
        let _ = user_data;
    }

    /// A completion arrived; `last` when it is the operation's final one.
    /// Returns false if it names no operation in flight (a bug: the caller
    /// counts it, and debug builds stop here).
    pub fn completed(&mut self, user_data: u64, last: bool) -> bool {
        #[cfg(debug_assertions)]
        {
            let known = if last {
                self.finals += 1;
                self.live.remove(&user_data)
            } else {
                self.live.contains(&user_data)
            };
            assert!(
                known,
                "io_uring: completion for {:?} (user_data {user_data:#x}, final {last}) \
                 names no operation in flight",
                Op::decode(user_data)
            );
            known
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = (user_data, last);
            true
        }
    }

    /// A connection's slot is about to be freed: nothing may be in flight
    /// for it.
    pub fn releasing(&self, token: Token) {
        #[cfg(debug_assertions)]
        {
            let (slot, generation) = split(token);
            let left: Vec<Op> = self
                .live
                .iter()
                .filter_map(|&user_data| Op::decode(user_data))
                .filter(|op| op.slot == slot && op.generation == generation)
                .collect();
            assert!(
                left.is_empty(),
                "io_uring: releasing a connection with operations in flight: {left:?}"
            );
        }
        #[cfg(not(debug_assertions))]
        let _ = token;
    }

    /// Operations in flight (debug builds; 0 otherwise).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        #[cfg(debug_assertions)]
        {
            self.live.len()
        }
        #[cfg(not(debug_assertions))]
        0
    }

    /// The loop is exiting: nothing may be in flight.
    pub fn finish(&self) {
        #[cfg(debug_assertions)]
        {
            assert!(
                self.live.is_empty(),
                "io_uring: exiting with operations in flight: {:?}",
                self.live
                    .iter()
                    .filter_map(|&user_data| Op::decode(user_data))
                    .collect::<Vec<_>>()
            );
            log::debug!(
                "io_uring: {} operations submitted, {} final completions, none in flight",
                self.submitted,
                self.finals
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let token = Token((0x0123_4567usize << 32) | 0x0055_e6f7);
        let op = Op::conn(Kind::Send, token, 200);
        let decoded = Op::decode(op.encode()).unwrap();
        assert_eq!(decoded, op);
        assert_eq!(decoded.slot, 0x00ab_cdee);
        assert_eq!(decoded.generation, 0x3_4567);
        assert!(decoded.is_for(token));
        // A later owner of the same slot (another generation) is not named.
        let next = Token((0x0123_4568usize << 32) | 0x0055_e6f7);
        assert!(!decoded.is_for(next));
        // Nor the upstream connection in the same slot of its own table.
        let upstream = Token((0x0123_4567usize << 32) | 0x8055_e6f7);
        assert!(!decoded.is_for(upstream));
        assert_eq!(split(upstream).0, 0x00ab_cdef);
        let ring = Op::decode(Op::ring(Kind::Accept, 3).encode()).unwrap();
        assert_eq!(
            (ring.kind, ring.slot, ring.activation),
            (Kind::Accept, RING_SLOT, 3)
        );
    }

    #[test]
    fn every_slot_max_conns_allows_fits() {
        // --max-conns is at most 10,000,000, and a shard's table may hold
        // them all: the last client slot and the upstream slot beside it.
        for table_slot in [9_999_999usize, (1 << 24) + 5] {
            for role in [0, crate::engine::driver::UPSTREAM_BIT] {
                let token = Token((77usize << 32) | role | table_slot);
                let op = Op::conn(Kind::Recv, token, 9);
                let decoded = Op::decode(op.encode()).unwrap();
                assert_eq!(decoded, op, "slot {table_slot} role {role:#x}");
                assert!(decoded.is_for(token));
                assert!((decoded.slot as usize) < SLOT_MAX);
                // Its neighbour in the table is someone else.
                assert!(!decoded.is_for(Token((77usize << 32) | role | (table_slot - 1))));
            }
        }
    }

    #[test]
    fn unknown_kinds_do_not_decode() {
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode(0xff << 56), None);
    }

    #[test]
    fn activations_make_re_arms_distinct() {
        let token = Token(7);
        let first = Op::conn(Kind::Recv, token, 0).encode();
        let second = Op::conn(Kind::Recv, token, 1).encode();
        assert_ne!(first, second);
        assert_ne!(first, Op::conn(Kind::Send, token, 0).encode());
    }

    #[cfg(debug_assertions)]
    #[test]
    fn tracker_follows_multishot_and_single_shot_ops() {
        let mut tracker = Tracker::default();
        let recv = Op::conn(Kind::Recv, Token(1), 0).encode();
        let send = Op::conn(Kind::Send, Token(1), 0).encode();
        tracker.submitted(recv);
        tracker.submitted(send);
        assert!(tracker.completed(recv, false));
        assert!(tracker.completed(recv, false));
        assert!(tracker.completed(send, true));
        assert_eq!(tracker.in_flight(), 1);
        assert!(tracker.completed(recv, true));
        tracker.releasing(Token(1));
        tracker.finish();
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "names no operation in flight")]
    fn tracker_rejects_a_second_final_completion() {
        let mut tracker = Tracker::default();
        let send = Op::conn(Kind::Send, Token(1), 0).encode();
        tracker.submitted(send);
        tracker.completed(send, true);
        tracker.completed(send, true);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "operations in flight")]
    fn tracker_rejects_a_release_with_ops_in_flight() {
        let mut tracker = Tracker::default();
        tracker.submitted(Op::conn(Kind::Recv, Token(5), 0).encode());
        tracker.releasing(Token(5));
    }
}
