//! `frame`: a u32 big-endian payload length, then the payload.

use super::{Decoded, Input};

/// Length of the header.
pub const HEADER_LEN: usize = 4;

/// Decodes the first frame of `input`.
pub fn decode(input: Input<'_>, max_frame: usize) -> Decoded {
    let _ = (input, max_frame);
    todo!()
}
