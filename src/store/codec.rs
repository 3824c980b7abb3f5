//! The record envelope and the key codecs: the only code that turns records into bytes.
//!
//! Envelope: `[RECORD_VERSION u8][crc ^ 0xFFFF_FFFF, u32 big-endian][payload]`, payload =
//! bincode 2.0.1 with [`config`]. The checksum covers where the record lives as well as
//! what it holds — `crc32(family tag, key length as u32 big-endian, key, payload)` — so a
//! damaged key byte (which would otherwise move an intact value to another valid-looking
//! key) fails it too. Storing it inverted means an all-zero value never validates.
//! Decoding checks, in order: length, version byte, checksum, payload decode under the
//! size limit, no trailing bytes.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

/// The envelope version byte of every value written by this build.
pub const RECORD_VERSION: u8 = 2;

/// The largest payload a record may have; decoding never allocates more than this.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

const HEADER: usize = 5;

/// The one bincode configuration used for every payload: bincode's standard
/// configuration (little-endian, variable-length integers) with a decode limit.
pub type Config = Configuration<LittleEndian, Varint, Limit<MAX_RECORD_BYTES>>;

/// The pinned bincode configuration.
pub const fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// The checksum of a record at `key` in the family tagged `tag` (see the module docs).
pub fn checksum(tag: u8, key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[tag]);
    h.update(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// Encodes `value`, to be stored at `key` in the family tagged `tag`, into an envelope.
///
/// # Errors
/// A message when the payload cannot be encoded or is over [`MAX_RECORD_BYTES`].
pub fn encode<T: bincode::Encode>(tag: u8, key: &[u8], value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![RECORD_VERSION, 0, 0, 0, 0];
    bincode::encode_into_std_write(value, &mut out, config()).map_err(|e| e.to_string())?;
    let payload_len = out.len() - HEADER;
    if payload_len > MAX_RECORD_BYTES {
        return Err(format!(
            "record payload of {payload_len} bytes is over the limit of {MAX_RECORD_BYTES}"
        ));
    }
    let crc = checksum(tag, key, out.get(HEADER..).unwrap_or_default()) ^ 0xFFFF_FFFF;
    if let Some(slot) = out.get_mut(1..HEADER) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(out)
}

/// Decodes the envelope stored at `key` in the family tagged `tag`. Any damage (to the
/// value, or to the key it is stored under) is an `Err` with the reason; never a panic.
///
/// # Errors
/// The reason the bytes are not a valid record of type `T` at that key.
pub fn decode<T: bincode::Decode<()>>(tag: u8, key: &[u8], bytes: &[u8]) -> Result<T, String> {
    let payload = open_envelope("record", RECORD_VERSION, tag, key, bytes)?;
    decode_payload(payload)
}

/// The payload of an envelope (`[version][crc ^ 0xFFFF_FFFF, u32 BE][payload]`) stored
/// at `key` in the family tagged `tag`, once its version is `version` and its checksum
/// holds; or why not, naming it `what` ("record", "block").
pub(crate) fn open_envelope<'a>(
    what: &str,
    version: u8,
    tag: u8,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<&'a [u8], String> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER>() else {
        return Err(format!(
            "{what} is {} bytes, shorter than its {HEADER}-byte header",
            bytes.len()
        ));
    };
    let [found, c0, c1, c2, c3] = *header;
    if found != version {
        return Err(format!(
            "unknown {what} version {found} (this build writes {version})"
        ));
    }
    let stored = u32::from_be_bytes([c0, c1, c2, c3]) ^ 0xFFFF_FFFF;
    let actual = checksum(tag, key, payload);
    if stored != actual {
        return Err(format!(
            "{what} checksum mismatch (stored {stored:08x}, computed {actual:08x}): the \
             {what} or its key is damaged"
        ));
    }
    Ok(payload)
}

/// Decodes a payload without the envelope (the fuzzers reach the decoders past the CRC
/// through this).
///
/// # Errors
/// The reason the bytes are not a valid payload of type `T`.
pub fn decode_payload<T: bincode::Decode<()>>(payload: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::decode_from_slice::<T, _>(payload, config())
        .map_err(|e| format!("payload does not decode: {e}"))?;
    if used != payload.len() {
        return Err(format!(
            "payload has {} trailing bytes",
            payload.len() - used
        ));
    }
    Ok(value)
}

/// Time in keys: an `i64` with its sign bit flipped, big-endian, so byte order is
/// numeric order (negative times sort before positive ones).
pub fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Lowercase hex of a key, for error messages.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_bytes_never_validate() {
        let err =
            decode::<u32>(4, b"k", &[RECORD_VERSION, 0, 0, 0, 0, 0]).expect_err("zeros must fail");
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn short_and_unknown_version_are_errors() {
        assert!(decode::<u32>(4, b"k", &[RECORD_VERSION, 2]).is_err());
        let mut good = encode(4, b"k", &7u32).expect("encodes");
        assert_eq!(decode::<u32>(4, b"k", &good), Ok(7));
        // The same bytes under another key or family do not validate.
        assert!(decode::<u32>(4, b"j", &good).is_err());
        assert!(decode::<u32>(5, b"k", &good).is_err());
        good[0] = 9;
        assert!(decode::<u32>(4, b"k", &good)
            .expect_err("version 9")
            .contains("version"));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let payload = [7u8, 0];
        assert!(decode_payload::<u32>(&payload)
            .expect_err("trailing")
            .contains("trailing"));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A string claiming u64::MAX bytes: refused by the limit, not attempted.
        let mut payload = vec![255u8];
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_payload::<String>(&payload).is_err());
    }

    #[test]
    fn time_order_is_byte_order() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_bytes(w[0]) < time_bytes(w[1]));
        }
        for t in times {
            assert_eq!(time_from_bytes(time_bytes(t)), t);
        }
    }
}
