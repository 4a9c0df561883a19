#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eventfold_server::fuzz::run("append_request", data));
