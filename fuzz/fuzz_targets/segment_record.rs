#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventfold_engine::fuzz::run("segment_record", data));
