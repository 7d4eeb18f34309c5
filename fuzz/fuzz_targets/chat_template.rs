#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lmgen_fuzz::chat_template(data));
