//! What requests and replies of each protocol look like on the wire, and
//! the bad inputs the checks send. Payloads are lowercase letters only, so
//! they are valid in every protocol (no `\n`, no `\r`, valid UTF-8).

use crate::engine::codec::Protocol;

/// The request carrying `payload`.
pub fn request(protocol: Protocol, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    match protocol {
        Protocol::Echo => out.extend_from_slice(payload),
        Protocol::Line => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Protocol::Frame => {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        Protocol::Resp => {
            out.extend_from_slice(format!("*2\r\n$4\r\nECHO\r\n${}\r\n", payload.len()).as_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The reply an echoing server sends for [`request`] of `payload` (RESP:
/// the reply to `ECHO payload`).
pub fn reply(protocol: Protocol, payload: &[u8]) -> Vec<u8> {
    match protocol {
        Protocol::Resp => {
            let mut out = format!("${}\r\n", payload.len()).into_bytes();
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
            out
        }
        other => request(other, payload),
    }
}

/// `len` payload bytes, different for each `seed`.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| b'a' + ((seed.wrapping_mul(7) + i.wrapping_mul(13)) % 26) as u8)
        .collect()
}

/// The start of a frame that claims to be as large as the protocol can
/// say (`frame`: a length header of 2^32-1; `resp`: a bulk of 2^32-1
/// bytes), after which filler bytes follow; for `line` nothing (the filler
/// is an endless line). `None` for `echo`, which has no frames.
pub fn oversized_head(protocol: Protocol) -> Option<Vec<u8>> {
    match protocol {
        Protocol::Echo => None,
        Protocol::Line => Some(Vec::new()),
        Protocol::Frame => Some(u32::MAX.to_be_bytes().to_vec()),
        Protocol::Resp => Some(b"*2\r\n$4\r\nECHO\r\n$4294967295\r\n".to_vec()),
    }
}

/// A tiny deterministic generator (xorshift64*), so a scan sends the same
/// bytes every time and a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Bytes of random noise per noise case.
const NOISE_BYTES: usize = 4096;
/// Fuzzed requests (random bytes of a valid request changed).
const FUZZ_CASES: usize = 16;

/// Named bad inputs for `protocol`: noise, truncated and fuzzed requests,
/// and the protocol's own malformed headers.
pub fn bad_inputs(protocol: Protocol) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(0x5eed);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let noise: Vec<u8> = (0..NOISE_BYTES).map(|_| rng.next_u64() as u8).collect();
    cases.push(("binary noise".into(), noise.clone()));
    let mut lines = noise;
    for i in (0..lines.len()).step_by(97) {
        lines[i] = b'\n';
    }
    cases.push(("noise with newlines".into(), lines));
    let valid = request(protocol, &payload(40, 1));
    cases.push((
        "truncated request".into(),
        valid[..valid.len() / 2].to_vec(),
    ));
    for i in 0..FUZZ_CASES {
        let mut fuzzed = valid.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(fuzzed.len());
            fuzzed[at] = rng.next_u64() as u8;
        }
        cases.push((format!("fuzzed request {i}"), fuzzed));
    }
    for &(name, bytes) in malformed(protocol) {
        cases.push((name.into(), bytes.to_vec()));
    }
    cases
}

/// Inputs each protocol's parser must refuse (or take) without harm.
fn malformed(protocol: Protocol) -> &'static [(&'static str, &'static [u8])] {
    match protocol {
        Protocol::Echo => &[("NUL bytes", b"\0\0\0\0")],
        Protocol::Line => &[
            ("invalid UTF-8 line", b"\xff\xfe\xc3\x28\n"),
            ("NUL line", b"\0\0\0\n"),
            ("carriage returns", b"\r\r\r\r\n"),
            ("empty lines", b"\n\n\n\n"),
        ],
        Protocol::Frame => &[
            ("length 2^31", b"\x80\0\0\0abc"),
            ("length 2^32-1", b"\xff\xff\xff\xff"),
            ("short header", b"\0\0"),
        ],
        Protocol::Resp => &[
            ("multibulk length not a number", b"*abc\r\n"),
            ("negative multibulk length", b"*-5\r\n"),
            ("negative bulk length", b"*1\r\n$-2\r\n"),
            ("bulk length not a number", b"*1\r\n$abc\r\n"),
            ("huge multibulk length", b"*99999999999999999999\r\n"),
            ("unknown type byte", b"%\x00\xff\r\n"),
            ("bulk shorter than said", b"*1\r\n$10\r\nabc\r\n"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_letters() {
        assert!(payload(1000, 3).iter().all(u8::is_ascii_lowercase));
        assert_ne!(payload(10, 1), payload(10, 2));
    }

    #[test]
    fn resp_reply_is_a_bulk() {
        assert_eq!(
            request(Protocol::Resp, b"ab"),
            b"*2\r\n$4\r\nECHO\r\n$2\r\nab\r\n"
        );
        assert_eq!(reply(Protocol::Resp, b"ab"), b"$2\r\nab\r\n");
        assert_eq!(request(Protocol::Frame, b"ab"), b"\0\0\0\x02ab");
    }
}
