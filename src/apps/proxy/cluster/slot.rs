//! Redis Cluster's hash slots: a key's slot is the CRC16 (XMODEM) of the
//! key, or of its hash tag (the bytes between the first `{` and the first
//! `}` after it, when there are any), modulo 16384; as Redis's
//! `keyHashSlot`, so keys land where `CLUSTER KEYSLOT` says.

use crc::{CRC_16_XMODEM, Crc};

/// Hash slots in a cluster.
pub const SLOTS: usize = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The slot of `key`.
pub fn slot(key: &[u8]) -> u16 {
    CRC16.checksum(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// The part of `key` that is hashed: its tag `{...}` if it has a non-empty
/// one, else all of it.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_slots() {
        // Values from `redis-cli CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b""), 0);
    }

    #[test]
    fn hash_tags_put_keys_together() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"{user1000}.following"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(slot(b"foo{}{bar}"), CRC16.checksum(b"foo{}{bar}") & 16383);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }
}
