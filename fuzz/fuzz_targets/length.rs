//! Fuzzes the `frame` decoder: `cargo fuzz run length`.

#![no_main]

use holdfast::engine::codec::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| holdfast_fuzz::serve(Protocol::Frame, data));
