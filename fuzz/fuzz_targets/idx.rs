//! Any bytes through the IDX parser: an error or the data, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scratchnet::data::idx::parse_idx(data);
});
