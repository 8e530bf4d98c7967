//! The string commands, after Redis 7.0's src/t_string.c: argument checks
//! in the same order and with the same error texts.

use std::sync::Arc;

use super::reply::{
    self, EMPTY_BULK, NOT_INTEGER, OK, ONE, OOM, Out, STRING_TOO_LONG, SYNTAX, Sink, TOO_LARGE,
    ZERO, bulk_len,
};
use super::table::{Command, Op};
use super::{Kv, float};
use crate::apps::kv::store::{Oom, unix_ms};
use crate::engine::codec::resp::parse_int;

/// SET's and GETEX's options, as Redis's `OBJ_*` flags.
#[derive(Default, Clone, Copy)]
pub struct SetFlags {
    pub nx: bool,
    pub xx: bool,
    pub get: bool,
    pub keepttl: bool,
    pub persist: bool,
}

/// An expiry argument: which option gave it and its text.
#[derive(Clone, Copy)]
pub struct ExpireArg<'a> {
    pub text: &'a [u8],
    pub seconds: bool,
    pub absolute: bool,
}

/// Why an expiry argument was refused.
pub enum BadExpire {
    NotInteger,
    Invalid,
}

/// Redis's `getExpireMillisecondsOrReply`: the absolute expiry (Unix ms)
/// an EX/PX/EXAT/PXAT argument names. Zero or less, or an overflow, is an
/// invalid expire time.
pub fn expire_at(arg: ExpireArg<'_>, now: i64) -> Result<i64, BadExpire> {
    let mut ms = parse_int(arg.text).ok_or(BadExpire::NotInteger)?;
    if ms <= 0 || (arg.seconds && ms > i64::MAX / 1000) {
        return Err(BadExpire::Invalid);
    }
    if arg.seconds {
        ms *= 1000;
    }
    if !arg.absolute {
        // C's signed overflow wraps; Redis then sees a negative time.
        ms = ms.wrapping_add(now);
    }
    if ms <= 0 {
        return Err(BadExpire::Invalid);
    }
    Ok(ms)
}

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `parseExtendedStringArgumentsOrReply`: SET's options (from
/// argv[3]) or GETEX's (from argv[2]). `Err` is a syntax error.
pub fn parse_options<'a>(
    argv: &[&'a [u8]],
    set: bool,
) -> Result<(SetFlags, Option<ExpireArg<'a>>), ()> {
    let mut flags = SetFlags::default();
    let mut expire: Option<ExpireArg<'a>> = None;
    let mut j = if set { 3 } else { 2 };
    while j < argv.len() {
        let opt = argv[j];
        let next = argv.get(j + 1).copied();
        let timed = expire.is_some();
        if set && eq(opt, "NX") && !flags.xx {
            flags.nx = true;
        } else if set && eq(opt, "XX") && !flags.nx {
            flags.xx = true;
        } else if set && eq(opt, "GET") {
            flags.get = true;
        } else if set && eq(opt, "KEEPTTL") && !flags.persist && !timed {
            flags.keepttl = true;
        } else if !set && eq(opt, "PERSIST") && !timed && !flags.keepttl {
            flags.persist = true;
        } else if let Some(text) = next
            && !flags.keepttl
            && !flags.persist
            && (expire.is_none_or(|e| same_option(e, opt)))
            && let Some((seconds, absolute)) = expire_option(opt)
        {
            expire = Some(ExpireArg {
                text,
                seconds,
                absolute,
            });
            j += 1;
        } else {
            return Err(());
        }
        j += 1;
    }
    Ok((flags, expire))
}

/// EX, PX, EXAT, PXAT: (in seconds, absolute).
fn expire_option(opt: &[u8]) -> Option<(bool, bool)> {
    if eq(opt, "EX") {
        Some((true, false))
    } else if eq(opt, "PX") {
        Some((false, false))
    } else if eq(opt, "EXAT") {
        Some((true, true))
    } else if eq(opt, "PXAT") {
        Some((false, true))
    } else {
        None
    }
}

/// Redis lets an expiry option repeat (the last one counts) but not mix.
fn same_option(earlier: ExpireArg<'_>, opt: &[u8]) -> bool {
    expire_option(opt) == Some((earlier.seconds, earlier.absolute))
}

/// What a SET-like write did.
enum Set {
    Done(Option<Arc<[u8]>>),
    Aborted(Option<Arc<[u8]>>),
    TooLarge,
    Oom,
}

impl Kv {
    /// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
    pub(super) fn set(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let Ok((flags, expire)) = parse_options(argv, true) else {
            return out.put(SYNTAX);
        };
        let when = match expire.map(|e| expire_at(e, unix_ms())) {
            None => None,
            Some(Ok(when)) => Some(when),
            Some(Err(BadExpire::NotInteger)) => return out.put(NOT_INTEGER),
            Some(Err(BadExpire::Invalid)) => return out.invalid_expire("set"),
        };
        self.set_generic(argv[1], argv[2], flags, when, (OK, None), out);
    }

    /// SETEX key seconds value, PSETEX key ms value
    pub(super) fn setex(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let arg = ExpireArg {
            text: argv[2],
            seconds: command.op == Op::Setex,
            absolute: false,
        };
        let when = match expire_at(arg, unix_ms()) {
            Ok(when) => when,
            Err(BadExpire::NotInteger) => return out.put(NOT_INTEGER),
            Err(BadExpire::Invalid) => return out.invalid_expire(command.name),
        };
        let flags = SetFlags::default();
        self.set_generic(argv[1], argv[3], flags, Some(when), (OK, None), out);
    }

    /// SETNX key value
    pub(super) fn setnx(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let flags = SetFlags {
            nx: true,
            ..SetFlags::default()
        };
        self.set_generic(argv[1], argv[2], flags, None, (ONE, Some(ZERO)), out);
    }

    /// GETSET key value: SET with GET, the expiry cleared.
    pub(super) fn getset(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let flags = SetFlags {
            get: true,
            ..SetFlags::default()
        };
        self.set_generic(argv[1], argv[2], flags, None, (OK, None), out);
    }

    /// Redis's `setGenericCommand`; `replies` are what a done and an
    /// aborted (NX/XX) write answer without GET (`None`: a null).
    fn set_generic(
        &self,
        key: &[u8],
        value: &[u8],
        flags: SetFlags,
        when: Option<i64>,
        replies: (&[u8], Option<&[u8]>),
        out: &mut Out<'_, '_>,
    ) {
        let room = out.room();
        let done = self.store.write(key, |slot| {
            let old = if flags.get {
                slot.value().cloned()
            } else {
                None
            };
            if old.as_deref().is_some_and(|v| bulk_len(v) > room) {
                return Set::TooLarge;
            }
            let found = slot.exists();
            if (flags.nx && found) || (flags.xx && !found) {
                return Set::Aborted(old);
            }
            let expiry = if flags.keepttl { slot.expiry() } else { when };
            match slot.put(value.into(), expiry) {
                Ok(()) => Set::Done(old),
                Err(Oom) => Set::Oom,
            }
        });
        match done {
            Set::TooLarge => out.put(TOO_LARGE),
            Set::Oom => out.put(OOM),
            Set::Done(old) | Set::Aborted(old) if flags.get => match old {
                Some(old) => out.bulk(&old),
                None => out.null(),
            },
            Set::Done(_) => out.put(replies.0),
            Set::Aborted(_) => match replies.1 {
                Some(reply) => out.put(reply),
                None => out.null(),
            },
        }
    }

    /// GETDEL key
    pub(super) fn getdel(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let room = out.room();
        let old = self.store.with(argv[1], |slot| {
            match slot.value() {
                Some(v) if bulk_len(v) > room => return Err(()),
                Some(_) => {}
                None => return Ok(None),
            }
            Ok(slot.remove())
        });
        match old {
            Err(()) => out.put(TOO_LARGE),
            Ok(Some(old)) => out.bulk(&old),
            Ok(None) => out.null(),
        }
    }

    /// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
    pub(super) fn getex(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let Ok((flags, expire)) = parse_options(argv, false) else {
            return out.put(SYNTAX);
        };
        let room = out.room();
        let done = self.store.with(argv[1], |slot| {
            let Some(value) = slot.value().cloned() else {
                return Ok(None);
            };
            // Checked only for a key that exists, as Redis does.
            let when = match expire.map(|e| expire_at(e, slot.now())) {
                None => None,
                Some(Ok(when)) => Some(when),
                Some(Err(BadExpire::NotInteger)) => return Err(Some(NOT_INTEGER)),
                // Names the command: written below.
                Some(Err(BadExpire::Invalid)) => return Err(None),
            };
            if bulk_len(&value) > room {
                return Err(Some(TOO_LARGE));
            }
            match (when, expire) {
                (Some(when), Some(e)) if e.absolute && when <= slot.now() => {
                    slot.remove();
                }
                (Some(when), _) => {
                    slot.set_expiry(Some(when));
                }
                (None, _) if flags.persist => {
                    slot.set_expiry(None);
                }
                _ => {}
            }
            Ok(Some(value))
        });
        match done {
            Ok(Some(value)) => out.bulk(&value),
            Ok(None) => out.null(),
            Err(None) => out.invalid_expire("getex"),
            Err(Some(error)) => out.put(error),
        }
    }

    /// GETRANGE key start end (and SUBSTR), rendered ahead.
    pub(super) fn getrange(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let (Some(mut start), Some(mut end)) = (parse_int(argv[2]), parse_int(argv[3])) else {
            return out.put(NOT_INTEGER);
        };
        let Some(value) = self.store.get(argv[1]) else {
            return out.put(EMPTY_BULK);
        };
        let len = value.len() as i64;
        if start < 0 && end < 0 && start > end {
            return out.put(EMPTY_BULK);
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if start > end || len == 0 {
            return out.put(EMPTY_BULK);
        }
        out.bulk(&value[start as usize..=end as usize]);
    }

    /// SETRANGE key offset value
    pub(super) fn setrange(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let Some(offset) = parse_int(argv[2]) else {
            return out.put(NOT_INTEGER);
        };
        if offset < 0 {
            return out.error(b"offset is out of range");
        }
        let patch = argv[3];
        let max = self.max_value;
        let done = self.store.write(argv[1], |slot| {
            let old_len = slot.value().map_or(0, |v| v.len());
            if patch.is_empty() {
                return Ok(old_len);
            }
            let end = (offset as u64).saturating_add(patch.len() as u64);
            if end > max as u64 {
                return Err(STRING_TOO_LONG);
            }
            let end = end as usize;
            let mut value = slot.value().map_or_else(Vec::new, |v| v.to_vec());
            if value.len() < end {
                value.resize(end, 0);
            }
            value[offset as usize..end].copy_from_slice(patch);
            let len = value.len();
            let expiry = slot.expiry();
            slot.put(value.into(), expiry).map_err(|Oom| OOM)?;
            Ok(len)
        });
        match done {
            Ok(len) => out.integer(len as i64),
            Err(error) => out.put(error),
        }
    }

    /// APPEND key value
    pub(super) fn append(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let tail = argv[2];
        let max = self.max_value;
        let done = self.store.write(argv[1], |slot| {
            let old = slot.value().map_or(&[][..], |v| &v[..]);
            if old.len() + tail.len() > max {
                return Err(STRING_TOO_LONG);
            }
            let mut value = Vec::with_capacity(old.len() + tail.len());
            value.extend_from_slice(old);
            value.extend_from_slice(tail);
            let len = value.len();
            let expiry = slot.expiry();
            slot.put(value.into(), expiry).map_err(|Oom| OOM)?;
            Ok(len)
        });
        match done {
            Ok(len) => out.integer(len as i64),
            Err(error) => out.put(error),
        }
    }

    /// STRLEN key
    pub(super) fn strlen(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let len = self
            .store
            .with(argv[1], |slot| slot.value().map_or(0, |v| v.len()));
        out.integer(len as i64);
    }

    /// MSET / MSETNX key value [key value ...]
    pub(super) fn mset(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        if argv.len() % 2 == 0 {
            return out.wrong_arity(command.name);
        }
        let nx = command.op == Op::Msetnx;
        let mut keys = argv[1..].iter().copied().step_by(2);
        let values = argv[2..].iter().copied().step_by(2);
        let pairs = std::iter::from_fn(move || keys.next()).zip(values);
        match (self.store.set_many(pairs, nx), nx) {
            (Err(Oom), _) => out.put(OOM),
            (Ok(_), false) => out.put(OK),
            (Ok(set), true) => out.integer(i64::from(set)),
        }
    }

    /// INCR, DECR, INCRBY, DECRBY
    pub(super) fn incr(&self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let delta = match command.op {
            Op::Incr => 1,
            Op::Decr => -1,
            _ => {
                let Some(delta) = parse_int(argv[2]) else {
                    return out.put(NOT_INTEGER);
                };
                if command.op == Op::Incrby {
                    delta
                } else if delta == i64::MIN {
                    return out.error(b"decrement would overflow");
                } else {
                    -delta
                }
            }
        };
        let done = self.store.write(argv[1], |slot| {
            let current = match slot.value() {
                None => 0,
                Some(v) => parse_int(v).ok_or(NOT_INTEGER)?,
            };
            let next = current
                .checked_add(delta)
                .ok_or(&b"-ERR increment or decrement would overflow\r\n"[..])?;
            let expiry = slot.expiry();
            slot.put(next.to_string().as_bytes().into(), expiry)
                .map_err(|Oom| OOM)?;
            Ok(next)
        });
        match done {
            Ok(value) => out.integer(value),
            Err(error) => out.put(error),
        }
    }

    /// The reserve of INCRBYFLOAT: its result as the key is now.
    pub(super) fn incrbyfloat_reserve(&self, argv: &[&[u8]]) -> usize {
        let current = self.store.get(argv[1]);
        let result = float::incr_text(current.as_deref(), argv[2]);
        super::SMALL_REPLY.max(result.map_or(0, |r| reply::bulk_len(&r)))
    }

    /// INCRBYFLOAT key increment
    pub(super) fn incrbyfloat(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let room = out.room();
        let done = self.store.write(argv[1], |slot| {
            let text = float::incr_text(slot.value().map(|v| &v[..]), argv[2])?;
            if bulk_len(&text) > room {
                return Err(float::IncrFloatError::TooLarge);
            }
            let expiry = slot.expiry();
            slot.put(text.as_slice().into(), expiry)
                .map_err(|Oom| float::IncrFloatError::Oom)?;
            Ok(text)
        });
        match done {
            Ok(text) => out.bulk(&text),
            Err(error) => out.put(error.reply()),
        }
    }

    /// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN],
    /// rendered ahead.
    pub(super) fn lcs(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let a = self.store.get(argv[1]);
        let b = self.store.get(argv[2]);
        let (mut get_len, mut get_idx, mut with_match_len) = (false, false, false);
        let mut min_match_len: i64 = 0;
        let mut j = 3;
        while j < argv.len() {
            let opt = argv[j];
            let more = argv.len() - 1 - j;
            if eq(opt, "IDX") {
                get_idx = true;
            } else if eq(opt, "LEN") {
                get_len = true;
            } else if eq(opt, "WITHMATCHLEN") {
                with_match_len = true;
            } else if eq(opt, "MINMATCHLEN") && more > 0 {
                let Some(n) = parse_int(argv[j + 1]) else {
                    return out.put(NOT_INTEGER);
                };
                min_match_len = n.max(0);
                j += 1;
            } else {
                return out.put(SYNTAX);
            }
            j += 1;
        }
        if get_len && get_idx {
            return out.error(b"If you want both the length and indexes, please just use IDX.");
        }
        let a = a.as_deref().unwrap_or_default();
        let b = b.as_deref().unwrap_or_default();
        let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
        if cells > LCS_CELLS_MAX {
            return out.error(
                b"Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
            );
        }
        let lcs = Lcs::new(a, b);
        if get_len && !get_idx {
            return out.integer(i64::from(lcs.len()));
        }
        let (text, ranges) = lcs.walk(min_match_len as u64);
        if !get_idx {
            return out.bulk(&text);
        }
        out.map(2);
        out.bulk(b"matches");
        out.array(ranges.len());
        for range in &ranges {
            out.array(2 + usize::from(with_match_len));
            out.array(2);
            out.integer(i64::from(range.a.0));
            out.integer(i64::from(range.a.1));
            out.array(2);
            out.integer(i64::from(range.b.0));
            out.integer(i64::from(range.b.1));
            if with_match_len {
                out.integer(i64::from(range.len));
            }
        }
        out.bulk(b"len");
        out.integer(i64::from(lcs.len()));
    }
}

/// The largest LCS table (cells of 4 bytes), 64 MiB: about two 4 KiB
/// values. Redis's bound is `proto-max-bulk-len` bytes.
pub const LCS_CELLS_MAX: u64 = 16 * 1024 * 1024;

/// The dynamic-programming table of Redis's `lcsCommand`.
struct Lcs<'a> {
    a: &'a [u8],
    b: &'a [u8],
    table: Vec<u32>,
}

struct Match {
    a: (u32, u32),
    b: (u32, u32),
    len: u32,
}

impl<'a> Lcs<'a> {
    fn new(a: &'a [u8], b: &'a [u8]) -> Lcs<'a> {
        let width = b.len() + 1;
        let mut table = vec![0u32; (a.len() + 1) * width];
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                table[i * width + j] = if a[i - 1] == b[j - 1] {
                    table[(i - 1) * width + j - 1] + 1
                } else {
                    table[(i - 1) * width + j].max(table[i * width + j - 1])
                };
            }
        }
        Lcs { a, b, table }
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        self.table[i * (self.b.len() + 1) + j]
    }

    fn len(&self) -> u32 {
        self.at(self.a.len(), self.b.len())
    }

    /// The common subsequence and its matching ranges, walked back from
    /// the ends exactly as Redis walks them (ranges shorter than
    /// `min_len` left out).
    fn walk(&self, min_len: u64) -> (Vec<u8>, Vec<Match>) {
        let (alen, blen) = (self.a.len(), self.b.len());
        let mut idx = self.len() as usize;
        let mut text = vec![0u8; idx];
        let mut ranges = Vec::new();
        let unset = alen as u32;
        let (mut a_start, mut a_end, mut b_start, mut b_end) = (unset, 0u32, 0u32, 0u32);
        let (mut i, mut j) = (alen, blen);
        while i > 0 && j > 0 {
            let mut emit = false;
            if self.a[i - 1] == self.b[j - 1] {
                text[idx - 1] = self.a[i - 1];
                if a_start == unset {
                    a_start = (i - 1) as u32;
                    a_end = (i - 1) as u32;
                    b_start = (j - 1) as u32;
                    b_end = (j - 1) as u32;
                } else if a_start == i as u32 && b_start == j as u32 {
                    a_start -= 1;
                    b_start -= 1;
                } else {
                    emit = true;
                }
                if a_start == 0 || b_start == 0 {
                    emit = true;
                }
                idx -= 1;
                i -= 1;
                j -= 1;
            } else {
                if self.at(i - 1, j) > self.at(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                if a_start != unset {
                    emit = true;
                }
            }
            let match_len = a_end.wrapping_sub(a_start).wrapping_add(1);
            if emit {
                if min_len == 0 || u64::from(match_len) >= min_len {
                    ranges.push(Match {
                        a: (a_start, a_end),
                        b: (b_start, b_end),
                        len: match_len,
                    });
                }
                a_start = unset;
            }
        }
        (text, ranges)
    }
}

/// `-ERR` replies of INCRBYFLOAT.
impl float::IncrFloatError {
    fn reply(self) -> &'static [u8] {
        match self {
            float::IncrFloatError::NotFloat => reply::NOT_FLOAT,
            float::IncrFloatError::NanOrInfinity => {
                b"-ERR increment would produce NaN or Infinity\r\n"
            }
            float::IncrFloatError::TooLarge => TOO_LARGE,
            float::IncrFloatError::Oom => OOM,
        }
    }
}
