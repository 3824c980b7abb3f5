//! A small database with damaged files: open, read, verify. See
//! `profiledb::fuzzing::open_damaged`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // libFuzzer's panic hook aborts at the panic, before profiledb can contain one from
    // sled; this hook only records it, and `open_damaged` reports any that escapes.
    init: profiledb::fuzzing::quiet_panic_hook(),
    |data: &[u8]| {
        profiledb::fuzzing::open_damaged(data);
    }
);
