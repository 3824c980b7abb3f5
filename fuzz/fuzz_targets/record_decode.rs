//! Arbitrary bytes into every record decoder: envelope, payloads past the CRC, key codecs,
//! bitmap chunks. See `profiledb::fuzzing::record_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    profiledb::fuzzing::record_decode(data);
});
