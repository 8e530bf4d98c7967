//! Which upstream owns a key: ketama consistent hashing, placed exactly as
//! twemproxy (`nutcracker`) places keys with `distribution: ketama`,
//! `hash_tag: "{}"` and `hash: fnv1a_64` (its default) or `hash: murmur`.
//!
//! Why those functions: holdfast proxy is meant to replace nutcracker in
//! front of Redis servers that already hold data. With the same placement
//! an operator swaps the proxy and every key is still found where it was;
//! with any other hash, a cache in front of a database is emptied at once
//! and a store loses its keys. So the ring points come from MD5 (ketama's
//! choice, through the dependency-free `md5` crate; it runs only when the
//! ring is built, never per request), and the key hashes are nutcracker's
//! own, a few multiplications per key byte, with no crate at all (a
//! general-purpose hash crate such as xxhash would be as fast but place
//! keys elsewhere). The golden tests at the bottom were recorded from
//! nutcracker 0.5.0 (Debian, amd64) in front of three redis-servers.
//!
//! Which key hash: [`KeyHash::Fnv1a64`] to take over from a nutcracker that
//! ran with its default; [`KeyHash::Murmur`] for a new deployment.
//! Nutcracker's `fnv1a_64` keeps 32 bits and multiplies by the 64-bit FNV
//! prime cut to 32 bits (435), which mixes a key's last bytes poorly
//! (`key:0`..`key:9` land together); over 100k `key:N` keys the busiest of
//! 16 upstreams gets 31% over its share, against 12% with murmur, which is
//! about what 160 points per upstream allow (measured in the tests).
//!
//! Stability: an upstream's points depend only on its name (and its share of
//! the weight), so adding an upstream moves only the keys that now fall on
//! the new one's points, and removing one moves only its own keys.

pub use crate::config::{KeyHash, UPSTREAMS_MAX};

/// Continuum points per upstream of average weight, as ketama and nutcracker
/// (`KETAMA_POINTS_PER_SERVER`): 8 bytes each, so 1.3 KiB per upstream.
pub const POINTS_PER_UPSTREAM: usize = 160;

/// The largest weight of one upstream (nutcracker takes any positive int;
/// this keeps the total exact in the `f32` share that ketama computes).
pub const WEIGHT_MAX: u32 = 1 << 16;

/// Nutcracker formats each point's input into an 86-byte buffer
/// (`KETAMA_MAX_HOSTLEN`), so at most 85 bytes of `name-index` are hashed.
const POINT_INPUT_MAX: usize = 85;

/// A ring that maps keys to upstream indexes.
///
/// Invariant: `points` is sorted by `hash` and every `upstream` is below
/// `upstreams`.
#[derive(Clone, Debug)]
pub struct Continuum {
    points: Box<[Point]>,
    upstreams: usize,
    hash: KeyHash,
}

impl KeyHash {
    /// The ring position of `key` (already cut to its hash tag). The empty
    /// key is at 0, as nutcracker's `server_pool_hash` has it.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            _ if key.is_empty() => 0,
            KeyHash::Fnv1a64 => fnv1a_64(key),
            KeyHash::Murmur => murmur(key),
        }
    }
}

/// Why a ring could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// No upstream at all.
    Empty,
    /// More than [`UPSTREAMS_MAX`] upstreams.
    TooMany(usize),
    /// The upstream at this index has weight 0 or over [`WEIGHT_MAX`].
    Weight(usize),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Empty => write!(f, "no upstream to hash keys over"),
            RingError::TooMany(n) => write!(f, "{n} upstreams, at most {UPSTREAMS_MAX}"),
            RingError::Weight(i) => {
                write!(f, "upstream {i}: weight must be 1..={WEIGHT_MAX}")
            }
        }
    }
}

impl std::error::Error for RingError {}

impl Continuum {
    /// A ring over upstreams of equal weight; an upstream's index in
    /// `names` is what [`Continuum::upstream`] returns.
    ///
    /// Name each upstream as nutcracker names a server, or keys land
    /// elsewhere: the `host:port` as written in its configuration (a host
    /// name stays a host name, not the address it resolves to; the
    /// `:port` is dropped when it is 11211), or the explicit name that
    /// follows the weight (`127.0.0.1:6379:1 redis1` is named `redis1`).
    pub fn new<N: AsRef<[u8]>>(names: &[N], hash: KeyHash) -> Result<Continuum, RingError> {
        let weighted: Vec<(&[u8], u32)> = names.iter().map(|n| (n.as_ref(), 1)).collect();
        Continuum::weighted(&weighted, hash)
    }

    /// A ring over `(name, weight)` upstreams: each gets points in
    /// proportion to its weight, computed as nutcracker does.
    pub fn weighted<N: AsRef<[u8]>>(
        upstreams: &[(N, u32)],
        hash: KeyHash,
    ) -> Result<Continuum, RingError> {
        if upstreams.is_empty() {
            return Err(RingError::Empty);
        }
        if upstreams.len() > UPSTREAMS_MAX {
            return Err(RingError::TooMany(upstreams.len()));
        }
        if let Some(bad) = upstreams
            .iter()
            .position(|(_, w)| *w == 0 || *w > WEIGHT_MAX)
        {
            return Err(RingError::Weight(bad));
        }
        let total: u32 = upstreams.iter().map(|(_, w)| w).sum();
        let count = upstreams.len();
        let mut points = Vec::with_capacity(count * POINTS_PER_UPSTREAM);
        let mut input = Vec::with_capacity(POINT_INPUT_MAX + 12);
        for (upstream, (name, weight)) in upstreams.iter().enumerate() {
            for index in 0..points_for(*weight, total, count) / 4 {
                input.clear();
                input.extend_from_slice(name.as_ref());
                input.extend_from_slice(format!("-{index}").as_bytes());
                input.truncate(POINT_INPUT_MAX);
                let digest = md5::compute(&input).0;
                for word in digest.chunks_exact(4) {
                    points.push(Point {
                        hash: u32::from_le_bytes([word[0], word[1], word[2], word[3]]),
                        upstream: upstream as u32,
                    });
                }
            }
        }
        // Two points with one hash are rare (32-bit MD5 words); a stable
        // sort gives such a tie to the lower upstream index, where
        // nutcracker's qsort leaves it unspecified.
        points.sort_by_key(|p| p.hash);
        Ok(Continuum {
            points: points.into_boxed_slice(),
            upstreams: count,
            hash,
        })
    }

    /// The index of the upstream that owns `key` (its hash tag if it has
    /// one). A binary search over the points, no allocation.
    pub fn upstream(&self, key: &[u8]) -> usize {
        if self.upstreams == 1 {
            return 0;
        }
        self.upstream_of_hash(self.hash.hash(hash_tag(key)))
    }

    /// The index of the upstream owning the ring position `hash`: the first
    /// point at or after it, wrapping to the first point.
    pub fn upstream_of_hash(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|p| p.hash < hash);
        let point = self.points.get(at).or(self.points.first());
        point.map_or(0, |p| p.upstream as usize)
    }

    /// How many upstreams the ring was built over.
    pub fn upstreams(&self) -> usize {
        self.upstreams
    }
}

/// The part of `key` that is hashed: what lies between the first `{` and
/// the first `}` after it, when that is not empty; otherwise the whole key
/// (Redis Cluster's rule, and nutcracker's with `hash_tag: "{}"`). Keys
/// that share a tag, `{user42}.name` and `{user42}.mail`, share an upstream,
/// which is what lets a client keep a multi-key operation on one server.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// Nutcracker's `hash_fnv1a_64`, bug for bug: a 32-bit FNV-1a seeded and
/// multiplied with the 64-bit constants cut to 32 bits, over key bytes
/// sign-extended as a C `char` is on x86-64.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    const OFFSET: u32 = 0xcbf2_9ce4_8422_2325_u64 as u32;
    const PRIME: u32 = 0x0100_0000_01b3_u64 as u32;
    key.iter().fold(OFFSET, |hash, &b| {
        (hash ^ (b as i8 as i32 as u32)).wrapping_mul(PRIME)
    })
}

/// Nutcracker's `hash_murmur`: MurmurHash2 (32-bit, little-endian words)
/// seeded with `0xdeadbeef * len`.
pub fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut words = key.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[derive(Clone, Copy, Debug)]
struct Point {
    hash: u32,
    upstream: u32,
}

/// Points for one upstream, with ketama's arithmetic: its weight share in
/// `f32`, times 40 hashes of 4 points each per upstream, floored to a
/// multiple of 4 (`pct * 160 / 4 * n + 1e-10`, the epsilon in `f64`).
fn points_for(weight: u32, total: u32, count: usize) -> usize {
    let share = weight as f32 / total as f32;
    let hashes = (share * POINTS_PER_UPSTREAM as f32 / 4.0 * count as f32) as f64 + 1e-10;
    ((hashes as f32).floor() * 4.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("10.0.0.{i}:6379")).collect()
    }

    fn keys() -> impl Iterator<Item = Vec<u8>> {
        (0..100_000).map(|i| format!("key:{i}").into_bytes())
    }

    const RECORDED: [&str; 3] = ["127.0.0.1:16501", "127.0.0.1:16502", "127.0.0.1:16503"];

    #[test]
    fn placement_matches_nutcracker_fnv1a_64() {
        // Recorded: nutcracker 0.5.0, ketama, fnv1a_64, hash_tag "{}",
        // servers 127.0.0.1:16501:1 .. 16503:1; which redis-server got it.
        let ring = Continuum::new(&RECORDED, KeyHash::Fnv1a64).unwrap();
        let mut golden: Vec<(&[u8], usize)> = vec![
            (b"{user1000}.following", 1),
            (b"{user1000}.followers", 1),
            (b"foo{}{bar}", 0),
            (b"foo{{bar}}zap", 2),
            (b"{}x", 2),
            (b"x{y}", 1),
            (b"{y}", 1),
            (b"y", 1),
            (b"a", 1),
            (b"", 1),
            (b"user:\xff\x80", 1),
            (b"caf\xc3\xa9", 2),
            (b"\x80", 1),
            (b"k\x7f", 0),
        ];
        let numbered: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
        for (i, key) in numbered.iter().enumerate() {
            golden.push((key.as_bytes(), if i < 10 { 2 } else { 1 }));
        }
        for (key, upstream) in golden {
            assert_eq!(ring.upstream(key), upstream, "{:?}", key.escape_ascii());
        }
    }

    #[test]
    fn placement_matches_nutcracker_murmur() {
        // Recorded as above with `hash: murmur`.
        let ring = Continuum::new(&RECORDED, KeyHash::Murmur).unwrap();
        let golden: [(&[u8], usize); 24] = [
            (b"key:0", 2),
            (b"key:1", 2),
            (b"key:2", 0),
            (b"key:3", 0),
            (b"key:4", 1),
            (b"key:5", 0),
            (b"key:6", 2),
            (b"key:7", 0),
            (b"key:8", 2),
            (b"key:9", 1),
            (b"key:10", 0),
            (b"key:11", 0),
            (b"{user1000}.following", 2),
            (b"foo{}{bar}", 1),
            (b"{}x", 0),
            (b"x{y}", 0),
            (b"a", 0),
            (b"ab", 0),
            (b"abc", 2),
            (b"abcd", 0),
            (b"abcde", 2),
            (b"", 1),
            (b"user:\xff\x80", 0),
            (b"caf\xc3\xa9", 2),
        ];
        for (key, upstream) in golden {
            assert_eq!(ring.upstream(key), upstream, "{:?}", key.escape_ascii());
        }
    }

    #[test]
    fn key_hash_names_round_trip() {
        for hash in [KeyHash::Fnv1a64, KeyHash::Murmur] {
            assert_eq!(hash.name().parse::<KeyHash>(), Ok(hash));
        }
        assert!("md5".parse::<KeyHash>().is_err());
        assert_eq!(KeyHash::default(), KeyHash::Fnv1a64);
    }

    #[test]
    fn hash_tag_is_the_first_braces() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"}{x}"), b"x");
        assert_eq!(hash_tag(b""), b"");
    }

    #[test]
    fn tagged_keys_share_an_upstream() {
        let ring = Continuum::new(&names(8), KeyHash::Fnv1a64).unwrap();
        for user in 0..200 {
            let a = format!("{{user{user}}}.name");
            let b = format!("x{{user{user}}}.mail");
            assert_eq!(ring.upstream(a.as_bytes()), ring.upstream(b.as_bytes()));
            assert_eq!(
                ring.upstream(a.as_bytes()),
                ring.upstream(format!("user{user}").as_bytes())
            );
        }
    }

    /// The largest relative distance of an upstream's share of 100k keys
    /// from 1/count.
    fn spread(count: usize, hash: KeyHash) -> f64 {
        let ring = Continuum::new(&names(count), hash).unwrap();
        let mut hits = vec![0usize; count];
        for key in keys() {
            hits[ring.upstream(&key)] += 1;
        }
        let fair = 100_000.0 / count as f64;
        hits.iter()
            .map(|&n| (n as f64 - fair).abs() / fair)
            .fold(0.0, f64::max)
    }

    #[test]
    fn keys_spread_evenly() {
        // Measured maxima, murmur | fnv1a_64: 2: 5% | 5%, 3: 10% | 10%,
        // 4: 7% | 8%, 8: 8% | 13%, 16: 12% | 31%, 32: 17% | 33%. The ring's
        // own spread with 160 points grows with N; fnv1a_64 adds to it.
        for count in [2, 3, 4, 5, 8] {
            assert!(spread(count, KeyHash::Murmur) < 0.12, "murmur, {count}");
            assert!(spread(count, KeyHash::Fnv1a64) < 0.15, "fnv1a_64, {count}");
        }
        assert!(spread(16, KeyHash::Murmur) < 0.15);
        assert!(spread(32, KeyHash::Murmur) < 0.20);
    }

    #[test]
    fn adding_an_upstream_moves_about_its_share_to_it_only() {
        for (count, hash) in [
            (2, KeyHash::Fnv1a64),
            (4, KeyHash::Murmur),
            (8, KeyHash::Murmur),
        ] {
            let before = Continuum::new(&names(count), hash).unwrap();
            let after = Continuum::new(&names(count + 1), hash).unwrap();
            let mut moved = 0usize;
            for key in keys() {
                let (old, new) = (before.upstream(&key), after.upstream(&key));
                if old != new {
                    assert_eq!(new, count, "a key moved between old upstreams");
                    moved += 1;
                }
            }
            let share = 100_000 / (count + 1);
            assert!(
                moved.abs_diff(share) < share / 3,
                "{count}+1: moved {moved}, share {share}"
            );
        }
    }

    #[test]
    fn removing_an_upstream_moves_only_its_keys() {
        let all = names(6);
        let ring = Continuum::new(&all, KeyHash::Murmur).unwrap();
        for gone in 0..all.len() {
            let rest: Vec<&String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, n)| n)
                .collect();
            let smaller = Continuum::new(&rest, KeyHash::Murmur).unwrap();
            for key in keys().step_by(7) {
                let old = ring.upstream(&key);
                if old != gone {
                    let new = smaller.upstream(&key);
                    assert_eq!(rest[new], &all[old], "a key of a remaining upstream moved");
                }
            }
        }
    }

    #[test]
    fn placement_is_deterministic() {
        let a = Continuum::new(&names(5), KeyHash::Murmur).unwrap();
        let b = Continuum::new(&names(5), KeyHash::Murmur).unwrap();
        assert!(keys().take(1000).all(|k| a.upstream(&k) == b.upstream(&k)));
    }

    #[test]
    fn weights_share_points() {
        let ring = Continuum::weighted(&[("a:1", 1), ("b:1", 3)], KeyHash::Murmur).unwrap();
        let heavy = ring.points.iter().filter(|p| p.upstream == 1).count();
        assert_eq!((ring.points.len(), heavy), (320, 240));
        assert_eq!(points_for(1, 3, 3), POINTS_PER_UPSTREAM);
        assert_eq!(points_for(1, 7, 7), POINTS_PER_UPSTREAM);
    }

    #[test]
    fn bad_rings_rejected() {
        let none: [&str; 0] = [];
        assert_eq!(
            Continuum::new(&none, KeyHash::Murmur).unwrap_err(),
            RingError::Empty
        );
        assert_eq!(
            Continuum::weighted(&[("a", 1), ("b", 0)], KeyHash::Murmur).unwrap_err(),
            RingError::Weight(1)
        );
        let many = names(UPSTREAMS_MAX + 1);
        assert_eq!(
            Continuum::new(&many, KeyHash::Murmur).unwrap_err(),
            RingError::TooMany(UPSTREAMS_MAX + 1)
        );
    }

    #[test]
    fn positions_wrap_past_the_last_point() {
        let ring = Continuum::new(&names(3), KeyHash::Murmur).unwrap();
        let first = ring.points[0].upstream as usize;
        assert_eq!(ring.upstream_of_hash(u32::MAX), first);
        assert_eq!(ring.upstream_of_hash(0), first);
        let one = Continuum::new(&["only:1"], KeyHash::Murmur).unwrap();
        assert_eq!(one.upstream(b"anything"), 0);
    }
}
