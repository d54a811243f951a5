#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::classify(data));
