//! Operation sequences (with reopen and injected-fault crash steps) against an in-memory
//! model. See `profiledb::fuzzing::ops_model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    profiledb::fuzzing::ops_model(data);
});
