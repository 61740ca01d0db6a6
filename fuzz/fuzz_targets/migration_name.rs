//! `parse_file_name` on arbitrary UTF-8: never panics, and what it accepts formats back
//! to the same file name (see `tenantctl::fuzzing::migration_name`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        tenantctl::fuzzing::migration_name(name);
    }
});
