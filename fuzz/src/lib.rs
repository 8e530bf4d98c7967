//! What every decoder fuzz target does: serve fuzzer bytes to a codec the
//! way a connection would, and check the decoder contract on every answer;
//! and what the PROXY header target does ([`proxy_header`]).

use holdfast::engine::buffer::Ring;
use holdfast::config::ProxyProtocol;
use holdfast::engine::codec::{Codec, Decoded, Input, Protocol};
use holdfast::engine::front::header::{self, Parsed};

/// Small, so that frames often straddle the wrap.
pub const RING_CAPACITY: usize = 64;

/// Splits `data` into a limit byte, a two-byte cut point and the stream;
/// delivers the stream in two reads split at the cut point, through one
/// ring, decoding and consuming after each push until the codec needs more
/// or reports an error (which closes the connection: we stop there).
pub fn serve(protocol: Protocol, data: &[u8]) {
    let [limit, cut_high, cut_low, stream @ ..] = data else {
        return;
    };
    // Any limit the configuration would accept: the payload plus its framing
    // fits the ring. Echo needs at least one byte per frame to make progress.
    let max_frame_bound = RING_CAPACITY - protocol.overhead();
    let mut max_frame = usize::from(*limit) % (max_frame_bound + 1);
    if protocol == Protocol::Echo {
        max_frame = max_frame.max(1);
    }
    let codec = Codec::new(protocol, max_frame);
    let cut = usize::from(u16::from_be_bytes([*cut_high, *cut_low])) % (stream.len() + 1);
    let (before, after) = stream.split_at(cut);

    let mut ring = Ring::with_capacity(RING_CAPACITY);
    let mut progress = 0;
    for mut read in [before, after] {
        while !read.is_empty() {
            let taken = ring.push(read);
            read = &read[taken..];
            if !drain(codec, &mut ring, &mut progress) {
                return;
            }
            // Within the limit, a full ring always holds a frame or an
            // error; if not, the connection would stall forever.
            assert!(!ring.is_full(), "decoder stuck on a full ring");
        }
    }
}

fn protocol_is_resp(codec: Codec) -> bool {
    codec.protocol() == Protocol::Resp
}

/// Decodes and consumes until the codec needs more (true) or errs (false).
fn drain(codec: Codec, ring: &mut Ring, progress: &mut usize) -> bool {
    loop {
        let (first, second) = ring.readable();
        let input = Input::new(first, second);
        match codec.decode(input, progress) {
            Decoded::Frame {
                start,
                len,
                consumed,
            } => {
                assert!(len <= codec.max_frame(), "payload over max_frame");
                assert!(start + len <= consumed, "payload outside its frame");
                assert!(consumed <= input.len(), "consumed more than held");
                assert!(consumed > 0, "a frame that consumes nothing");
                let mut payload = vec![0; len];
                input.copy_to(start, &mut payload);
                if protocol_is_resp(codec) {
                    // The service re-walks the frame: it must not panic.
                    let _ = holdfast::engine::codec::resp::Args::parse(&payload).count();
                }
                ring.consume(consumed);
            }
            Decoded::NeedMore => return true,
            Decoded::Error(_) => return false,
        }
    }
}

/// Splits `data` into a mode byte, a ring-size byte and the bytes a
/// connection sent first; parses them as a PROXY header and checks the
/// contract: no panic, a header never longer than the bytes or the ring
/// (nor than 107 bytes for a text one), and every prefix of the bytes
/// judged consistently with the whole (more bytes never turn an error
/// into a header, nor change a header found).
pub fn proxy_header(data: &[u8]) {
    let [mode, ring, bytes @ ..] = data else {
        return;
    };
    let mode = [ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Any][usize::from(*mode) % 3];
    let max_len = 16 + usize::from(*ring) * 4;
    let whole = header::parse(bytes, mode, max_len);
    if let Parsed::Header { len, .. } = whole {
        assert!(len <= bytes.len() && len <= max_len.max(header::V1_MAX));
        assert_eq!(header::parse(&bytes[..len], mode, max_len), whole);
    }
    for cut in 0..bytes.len() {
        match header::parse(&bytes[..cut], mode, max_len) {
            Parsed::Incomplete => {}
            // A prefix at least as long as the header holds it whole.
            found @ Parsed::Header { .. } => assert_eq!(found, whole, "a header on {cut} bytes"),
            early => assert_eq!(
                std::mem::discriminant(&early),
                std::mem::discriminant(&whole),
                "a verdict on {cut} bytes that more bytes changed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without nightly and cargo-fuzz, this at least runs the harness over
    /// pseudo-random inputs (xorshift: no dependency, same cases each run).
    #[test]
    fn harness_runs_on_pseudo_random_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            // Skewed towards newlines, small length headers and RESP's
            // markers, so frames are found and not only rejected.
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 | 1 => b'\n',
                    2 => 0,
                    3 => b'\r',
                    4 => b"*$1"[(next() % 3) as usize],
                    _ => next() as u8,
                })
                .collect();
            for protocol in [Protocol::Echo, Protocol::Line, Protocol::Frame, Protocol::Resp] {
                serve(protocol, &data);
            }
            proxy_header(&data);
        }
    }
}
