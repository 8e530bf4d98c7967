//! Fuzzes the PROXY protocol header parser: `cargo fuzz run proxy_header`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| holdfast_fuzz::proxy_header(data));
