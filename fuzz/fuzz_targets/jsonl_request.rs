#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lmgen_fuzz::jsonl_request(data));
