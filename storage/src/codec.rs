//! The one place that turns values into bytes: bincode 2 (standard config) over serde, with a
//! format version byte in front so the format can change without a flag day.
//!
//! Decoding is strict and bounded: an unknown version, trailing bytes or a value larger than
//! `MAX_DECODE_BYTES` is an error, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format every value is written in today.
pub const FORMAT_V1: u8 = 1;

/// Nothing we decode is larger than this (a snapshot travels in chunks below it).
pub const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

const CONFIG: bincode::config::Configuration = bincode::config::standard();

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("value of {0} bytes is above the decode limit")]
    TooLarge(usize),
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes `value` with the version byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_V1);
    bincode::serde::encode_into_std_write(value, &mut out, CONFIG)?;
    Ok(out)
}

/// Decodes what [`encode`] wrote; refuses unknown versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_V1 {
        return Err(CodecError::UnknownVersion(version));
    }
    if body.len() > MAX_DECODE_BYTES {
        return Err(CodecError::TooLarge(body.len()));
    }
    let config = CONFIG.with_limit::<MAX_DECODE_BYTES>();
    let (value, used) = bincode::serde::decode_from_slice(body, config)?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yinyi_ledger::{Money, Timestamp};

    #[test]
    fn round_trips_with_a_version_byte() {
        let value = (Money::from_cents(1230), Timestamp(7), "w".to_string());
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        let back: (Money, Timestamp, String) = decode(&bytes).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn refuses_unknown_versions_and_trailing_bytes() {
        let mut bytes = encode(&5u64).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u64>(&bytes),
            Err(CodecError::Trailing(1))
        ));
        bytes[0] = 9;
        assert!(matches!(
            decode::<u64>(&bytes),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<yinyi_ledger::Command>(&bytes);
            let _ = decode::<yinyi_ledger::Outcome>(&bytes);
        }
    }
}
