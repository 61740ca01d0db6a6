//! `MigrationSet::load` on a directory of arbitrary (name, bytes) files: returns Ok or a
//! setup error, never panics (see `tenantctl::fuzzing::migration_dir`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|files: Vec<(String, Vec<u8>)>| {
    let _ = tenantctl::fuzzing::migration_dir(&files);
});
