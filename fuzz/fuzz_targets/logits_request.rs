#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lmgen_fuzz::logits_request(data));
