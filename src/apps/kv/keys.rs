//! The keyspace commands, after Redis 7.0's src/expire.c and src/db.c:
//! expiry (EXPIRE family, TTL family, PERSIST), KEYS, SCAN, RANDOMKEY,
//! RENAME, TYPE, FLUSHALL/FLUSHDB, SELECT.

use super::reply::{
    self, NO_SUCH_KEY, NOT_INTEGER, OK, ONE, Out, SYNTAX, Sink, ZERO, array_header_len, bulk_len,
    c_str,
};
use super::table::{Command, Op};
use super::{Kv, glob};
use crate::apps::kv::store::{Renamed, unix_ms};
use crate::engine::codec::resp::parse_int;

/// The default COUNT of SCAN, as Redis's.
const SCAN_COUNT: usize = 10;

impl Kv {
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX|XX|GT|LT]
    pub(super) fn expire(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in &argv[3..] {
            match opt.to_ascii_lowercase().as_slice() {
                b"nx" => nx = true,
                b"xx" => xx = true,
                b"gt" => gt = true,
                b"lt" => lt = true,
                _ => {
                    let mut text = b"Unsupported option ".to_vec();
                    let opt = c_str(opt);
                    // Cut only if it could not fit this reply at all.
                    let room = out.room().saturating_sub(text.len() + 8);
                    text.extend_from_slice(&opt[..opt.len().min(room)]);
                    return out.error(&text);
                }
            }
        }
        if nx && (xx || gt || lt) {
            return out.error(b"NX and XX, GT or LT options at the same time are not compatible");
        }
        if gt && lt {
            return out.error(b"GT and LT options at the same time are not compatible");
        }
        let Some(mut when) = parse_int(argv[2]) else {
            return out.put(NOT_INTEGER);
        };
        let seconds = matches!(command.op, Op::Expire | Op::Expireat);
        if seconds {
            if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
                return out.invalid_expire(command.name);
            }
            when *= 1000;
        }
        let base = match command.op {
            Op::Expire | Op::Pexpire => unix_ms(),
            _ => 0,
        };
        if when > i64::MAX - base {
            return out.invalid_expire(command.name);
        }
        when += base;
        let set = self.store.with(argv[1], |slot| {
            if !slot.exists() {
                return false;
            }
            let current = slot.expiry();
            let refused = (nx && current.is_some())
                || (xx && current.is_none())
                || (gt && current.is_none_or(|c| when <= c))
                || (lt && current.is_some_and(|c| when >= c));
            if refused {
                return false;
            }
            if when <= slot.now() {
                slot.remove();
            } else {
                slot.set_expiry(Some(when));
            }
            true
        });
        out.put(if set { ONE } else { ZERO });
    }

    /// TTL / PTTL / EXPIRETIME / PEXPIRETIME key
    pub(super) fn ttl(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let millis = matches!(command.op, Op::Pttl | Op::Pexpiretime);
        let absolute = matches!(command.op, Op::Expiretime | Op::Pexpiretime);
        let ttl = self.store.with(argv[1], |slot| {
            if !slot.exists() {
                return -2;
            }
            let Some(expiry) = slot.expiry() else {
                return -1;
            };
            let left = if absolute {
                expiry
            } else {
                expiry - slot.now()
            };
            let left = left.max(0);
            // Rounded to the nearest second, as Redis does.
            if millis { left } else { (left + 500) / 1000 }
        });
        out.integer(ttl);
    }

    /// PERSIST key
    pub(super) fn persist(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let cleared = self.store.with(argv[1], |slot| {
            slot.expiry().is_some() && slot.set_expiry(None)
        });
        out.put(if cleared { ONE } else { ZERO });
    }

    /// TYPE key: every value here is a string.
    pub(super) fn key_type(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        if self.store.exists(argv[1]) {
            out.put(b"+string\r\n");
        } else {
            out.put(b"+none\r\n");
        }
    }

    /// RENAME / RENAMENX key newkey
    pub(super) fn rename(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let nx = command.op == Op::Renamenx;
        match (self.store.rename(argv[1], argv[2], nx), nx) {
            (Renamed::NoSuchKey, _) => out.put(NO_SUCH_KEY),
            (Renamed::TargetExists, _) => out.put(ZERO),
            (Renamed::Done, true) => out.put(ONE),
            (Renamed::Done, false) => out.put(OK),
        }
    }

    /// FLUSHALL / FLUSHDB [ASYNC|SYNC]: both free at once.
    pub(super) fn flush(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let fine = match argv {
            [_] => true,
            [_, mode] => mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async"),
            _ => false,
        };
        if !fine {
            return out.put(SYNTAX);
        }
        self.store.clear();
        out.put(OK);
    }

    /// SELECT index: there is one database, 0.
    pub(super) fn select(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        match parse_int(argv[1]) {
            None => out.put(NOT_INTEGER),
            Some(id) if i32::try_from(id).is_err() => {
                out.error(b"value is out of range, value must between -2147483648 and 2147483647")
            }
            Some(0) => out.put(OK),
            Some(_) => out.error(b"DB index is out of range"),
        }
    }

    /// KEYS pattern, rendered ahead; the reply must fit the ring.
    pub(super) fn keys(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let pattern = argv[1];
        let all = pattern == b"*";
        let room = out.room().saturating_sub(array_header_len(usize::MAX));
        let want = |key: &[u8]| all || glob::matches(pattern, key);
        let Some(keys) = self.store.keys(room, bulk_len, want) else {
            return out.put(reply::TOO_LARGE);
        };
        out.array(keys.len());
        for key in &keys {
            out.bulk(key);
        }
    }

    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type], rendered
    /// ahead. The cursor is this store's (see `Store::scan`), not Redis's;
    /// a reply that would not fit the ring ends early with the cursor
    /// where it stopped.
    pub(super) fn scan(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let Some(cursor) = parse_cursor(argv[1]) else {
            return out.error(b"invalid cursor");
        };
        let mut count = SCAN_COUNT;
        let mut pattern: Option<&[u8]> = None;
        let mut kind: Option<&[u8]> = None;
        let mut i = 2;
        while i < argv.len() {
            let more = argv.len() - i >= 2;
            let opt = argv[i];
            if opt.eq_ignore_ascii_case(b"count") && more {
                match parse_int(argv[i + 1]) {
                    None => return out.put(NOT_INTEGER),
                    Some(n) if n < 1 => return out.put(SYNTAX),
                    Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
                }
            } else if opt.eq_ignore_ascii_case(b"match") && more {
                pattern = Some(argv[i + 1]).filter(|p| *p != b"*");
            } else if opt.eq_ignore_ascii_case(b"type") && more {
                kind = Some(argv[i + 1]);
            } else {
                return out.put(SYNTAX);
            }
            i += 2;
        }
        // Every key is a string: another TYPE filters out everything.
        let strings = kind.is_none_or(|k| k.eq_ignore_ascii_case(b"string"));
        let want = |key: &[u8]| strings && pattern.is_none_or(|p| glob::matches(p, key));
        // The two headers and the cursor take at most 40 bytes.
        let room = out.room().saturating_sub(40);
        let mut keys = Vec::new();
        let Ok(next) = self
            .store
            .scan(cursor, count, room, bulk_len, want, &mut keys)
        else {
            return out.put(reply::TOO_LARGE);
        };
        out.array(2);
        out.bulk(next.to_string().as_bytes());
        out.array(keys.len());
        for key in &keys {
            out.bulk(key);
        }
    }

    /// RANDOMKEY, rendered ahead.
    pub(super) fn randomkey(&self, out: &mut dyn Sink) {
        match self.store.random_key(|| self.next_random()) {
            Some(key) => out.bulk(&key),
            None => out.null(),
        }
    }
}

/// A SCAN cursor as Redis reads it (`strtoul`, base 10): optional sign
/// (a minus wraps), digits to the end, no leading space, no overflow. An
/// empty cursor is 0; the text ends at a NUL, as C reads it.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let text = c_str(arg);
    if text.is_empty() {
        return Some(0);
    }
    if matches!(text[0], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        return None;
    }
    let (negative, digits) = match text[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_parse_as_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"5\0junk"), Some(5));
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
        assert_eq!(parse_cursor(b"+"), None);
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
    }
}
