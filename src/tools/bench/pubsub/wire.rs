//! What the pub/sub load sends and receives, in Redis's RESP2 framing:
//! channel names, SUBSCRIBE and PUBLISH commands, the payload of a
//! message (who sent it, to which channel, its number, when) and the check
//! that one came back intact, and the parse of what a subscribed
//! connection receives.

use crate::engine::codec::reply::{self, Element};
use crate::engine::codec::resp::encode_command;

/// Channels are named `hfbench:` and six digits, so every name has the
/// same length and a pattern `hfbench:000042*` matches one channel only.
pub const CHANNEL_PREFIX: &str = "hfbench:";

/// Channels a run may use: what six digits can number.
pub const CHANNELS_MAX: usize = 1_000_000;

/// Bytes of a payload's header: publisher (u32), channel (u32), sequence
/// number (u64), send time (u64 ns since the run's epoch), little-endian.
pub const HEADER_LEN: usize = 24;

/// The name of channel `channel`.
pub fn channel_name(channel: usize) -> String {
    format!("{CHANNEL_PREFIX}{channel:06}")
}

/// The pattern that matches channel `channel` and no other.
pub fn channel_pattern(channel: usize) -> String {
    format!("{}*", channel_name(channel))
}

/// The channel a name names, if it is one of ours.
pub fn channel_index(name: &[u8]) -> Option<u32> {
    let digits = name.strip_prefix(CHANNEL_PREFIX.as_bytes())?;
    if digits.len() != 6 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0')))
}

/// The channel a pattern of ours matches.
pub fn pattern_index(pattern: &[u8]) -> Option<u32> {
    channel_index(pattern.strip_suffix(b"*")?)
}

/// `SUBSCRIBE <channel>`, or `PSUBSCRIBE <pattern>`.
pub fn subscribe_command(channel: usize, pattern: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if pattern {
        encode_command(
            &[b"PSUBSCRIBE", channel_pattern(channel).as_bytes()],
            &mut out,
        );
    } else {
        encode_command(&[b"SUBSCRIBE", channel_name(channel).as_bytes()], &mut out);
    }
    out
}

/// Where a message comes from and goes: the fields of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The publisher, 0 to `--publishers` − 1.
    pub publisher: u32,
    /// The channel it was published to.
    pub channel: u32,
    /// Its number among that publisher's messages to that channel, from 0.
    pub seq: u64,
    /// When it was written, in ns since the run's epoch.
    pub sent_ns: u64,
}

/// The payload byte at `at` (past the header) of message `header`: a
/// pattern that depends on every header field, so a payload swapped with
/// another's, shifted by a byte or with a changed header does not pass.
fn fill_byte(header: &Header, at: usize) -> u8 {
    let mix = header.seq
        ^ header.sent_ns
        ^ u64::from(header.publisher).wrapping_mul(7)
        ^ u64::from(header.channel).wrapping_mul(13);
    (at as u8).wrapping_mul(31).wrapping_add(mix as u8)
}

/// Appends `PUBLISH <channel> <payload>` to `out`, the payload `size`
/// bytes (at least [`HEADER_LEN`]) for `header`.
pub fn publish_command(header: &Header, size: usize, out: &mut Vec<u8>) {
    let name = channel_name(header.channel as usize);
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
    out.extend_from_slice(name.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\r\n$");
    out.extend_from_slice(size.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&header.publisher.to_le_bytes());
    out.extend_from_slice(&header.channel.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.sent_ns.to_le_bytes());
    out.extend((HEADER_LEN..size).map(|at| fill_byte(header, at)));
    out.extend_from_slice(b"\r\n");
}

/// The header of `payload` if the whole payload is intact: `size` bytes,
/// and every byte past the header the one its header calls for.
pub fn check_payload(payload: &[u8], size: usize) -> Option<Header> {
    if payload.len() != size || size < HEADER_LEN {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().unwrap());
    let header = Header {
        publisher: u32_at(0),
        channel: u32_at(4),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    };
    let intact = payload[HEADER_LEN..]
        .iter()
        .enumerate()
        .all(|(index, &byte)| byte == fill_byte(&header, HEADER_LEN + index));
    intact.then_some(header)
}

/// One frame a subscribed connection received.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// `subscribe` or `psubscribe` (the kind), the channel or pattern, and
    /// the connection's subscription count.
    Subscribed(&'a [u8], &'a [u8], i64),
    /// `message`: the channel and the payload.
    Message(&'a [u8], &'a [u8]),
    /// `pmessage`: the pattern, the channel and the payload.
    PMessage(&'a [u8], &'a [u8], &'a [u8]),
    /// An error reply (the text after `-`).
    Error(&'a [u8]),
    /// Anything else a well-formed RESP2 reply can be.
    Other,
}

/// Elements of a push frame: `pmessage` has the most.
const PUSH_ELEMENTS_MAX: usize = 4;

/// Reads the first frame of `bytes`: the frame and the bytes it took,
/// `Ok(None)` when more bytes are needed, an error for bytes that are not
/// RESP2.
pub fn next_push(bytes: &[u8]) -> Result<Option<(Push<'_>, usize)>, String> {
    let Some((first, mut at)) = reply::next(bytes).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let count = match first {
        Element::Error(text) => return Ok(Some((Push::Error(text), at))),
        Element::Array(count) if (1..=PUSH_ELEMENTS_MAX).contains(&count) => count,
        // Walk past whatever it is, to say what it was.
        _ => {
            return Ok(reply::reply_len(bytes)
                .map_err(|e| e.to_string())?
                .map(|len| (Push::Other, len)));
        }
    };
    let mut elements = [Element::Nil; PUSH_ELEMENTS_MAX];
    for element in elements.iter_mut().take(count) {
        let Some((item, used)) = reply::next(&bytes[at..]).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if let Element::Array(_) = item {
            // A nested array: no push frame has one.
            return Ok(reply::reply_len(bytes)
                .map_err(|e| e.to_string())?
                .map(|len| (Push::Other, len)));
        }
        *element = item;
        at += used;
    }
    Ok(Some((classify(&elements[..count]), at)))
}

/// What the elements of a push frame make.
fn classify<'a>(elements: &[Element<'a>]) -> Push<'a> {
    use Element::{Bulk, Integer};
    match elements {
        [Bulk(kind), Bulk(name), Integer(count)]
            if *kind == b"subscribe" || *kind == b"psubscribe" =>
        {
            Push::Subscribed(kind, name, *count)
        }
        [Bulk(b"message"), Bulk(channel), Bulk(payload)] => Push::Message(channel, payload),
        [
            Bulk(b"pmessage"),
            Bulk(pattern),
            Bulk(channel),
            Bulk(payload),
        ] => Push::PMessage(pattern, channel, payload),
        _ => Push::Other,
    }
}

/// `bytes` for an error message: printable ASCII as is, the rest escaped,
/// at most 80 bytes of it.
pub fn show(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(80)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > 80 {
        format!("{shown}...")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> Header {
        Header {
            publisher: 3,
            channel: 42,
            seq,
            sent_ns: 123_456,
        }
    }

    /// The payload bytes of a PUBLISH command built for `header`.
    fn payload(header: &Header, size: usize) -> Vec<u8> {
        let mut command = Vec::new();
        publish_command(header, size, &mut command);
        command[command.len() - 2 - size..command.len() - 2].to_vec()
    }

    #[test]
    fn publish_is_the_multibulk_every_client_sends() {
        let mut command = Vec::new();
        publish_command(&header(7), 64, &mut command);
        let mut expected = Vec::new();
        encode_command(
            &[b"PUBLISH", b"hfbench:000042", &payload(&header(7), 64)],
            &mut expected,
        );
        assert_eq!(command, expected);
    }

    #[test]
    fn intact_payload_gives_back_its_header_and_any_change_is_caught() {
        let good = payload(&header(9), 64);
        assert_eq!(check_payload(&good, 64), Some(header(9)));
        for at in HEADER_LEN..64 {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            assert_eq!(check_payload(&bad, 64), None, "byte {at}");
        }
        // Another message's header over this payload's body.
        let mut swapped = good.clone();
        swapped[..HEADER_LEN].copy_from_slice(&payload(&header(10), 64)[..HEADER_LEN]);
        assert_eq!(check_payload(&swapped, 64), None);
        assert_eq!(check_payload(&good[..63], 64), None);
        assert_eq!(check_payload(&payload(&header(1), 24), 24), Some(header(1)));
    }

    #[test]
    fn subscribed_connection_frames_are_read_as_redis_sends_them() {
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$14\r\nhfbench:000001\r\n:1\r\n";
        assert_eq!(
            next_push(confirm).unwrap(),
            Some((
                Push::Subscribed(b"subscribe", b"hfbench:000001", 1),
                confirm.len()
            ))
        );
        let message = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n";
        assert_eq!(
            next_push(message).unwrap(),
            Some((Push::Message(b"c", b"hi"), message.len()))
        );
        let pmessage = b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$1\r\nc\r\n$2\r\nhi\r\n";
        assert_eq!(
            next_push(pmessage).unwrap(),
            Some((Push::PMessage(b"c*", b"c", b"hi"), pmessage.len()))
        );
        for cut in 0..message.len() {
            assert_eq!(next_push(&message[..cut]).unwrap(), None, "cut at {cut}");
        }
        let error = b"-ERR unknown command 'SUBSCRIBE'\r\n";
        assert_eq!(
            next_push(error).unwrap(),
            Some((Push::Error(b"ERR unknown command 'SUBSCRIBE'"), error.len()))
        );
        assert_eq!(next_push(b":5\r\n").unwrap(), Some((Push::Other, 4)));
        let nested = b"*2\r\n*1\r\n:1\r\n:2\r\n";
        assert_eq!(
            next_push(nested).unwrap(),
            Some((Push::Other, nested.len()))
        );
        assert!(next_push(b"hello\r\n").is_err());
    }

    #[test]
    fn names_and_patterns_match_one_channel() {
        assert_eq!(channel_name(7), "hfbench:000007");
        assert_eq!(channel_pattern(7), "hfbench:000007*");
        assert_eq!(channel_index(b"hfbench:000007"), Some(7));
        assert_eq!(channel_index(b"hfbench:999999"), Some(999_999));
        assert_eq!(channel_index(b"hfbench:00007"), None);
        assert_eq!(channel_index(b"hfbench:0000a7"), None);
        assert_eq!(channel_index(b"xfbench:000007"), None);
        assert_eq!(pattern_index(b"hfbench:000007*"), Some(7));
        assert_eq!(pattern_index(b"hfbench:000007"), None);
        let subscribe = subscribe_command(7, true);
        assert!(subscribe.starts_with(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$15\r\nhfbench:000007*"));
        assert_eq!(show(b"-ERR x\r\n"), "-ERR x\\r\\n");
    }
}
