#![no_main]
//! cargo-fuzz wrapper of `silver_p2p_core::fuzzing::message_decode`, where the target is documented.
libfuzzer_sys::fuzz_target!(|data: &[u8]| silver_p2p_core::fuzzing::message_decode(data));
