//! Arbitrary bytes into every record decoder: envelope, payloads past the CRC, key codecs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    profiledb::store::decode_everything(data);
});
