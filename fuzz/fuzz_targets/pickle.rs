//! Any bytes through the pickle reader: an error or a value, never a panic or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scratchnet::data::pickle::parse(data);
});
