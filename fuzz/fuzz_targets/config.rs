//! `config::parse_file` on arbitrary UTF-8, then `resolve` with no flags and an empty
//! environment (see `tenantctl::fuzzing::config`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tenantctl::fuzzing::config(text);
    }
});
