//! Identifiers: chunk ids (32-byte hashes) and archive ids (time-sortable strings).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Identifies a stored chunk or block-map segment: SHA-256 of its plaintext in an unencrypted
/// repository, HMAC-SHA256 under the repository's id key in an encrypted one.
///
/// Written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidChunkId { id: s.to_owned() };
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| invalid())?;
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Identifies an archive: `YYYYMMDDTHHMMSSZ-xxxxxxxx`, the UTC time the archive was started
/// and 8 random hex digits. Sorting ids sorts archives by creation time.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveId(String);

impl ArchiveId {
    /// A new id for an archive created at `created`.
    pub fn generate(created: DateTime<Utc>) -> Result<Self, Error> {
        let mut suffix = [0u8; 4];
        crate::crypto::random_bytes(&mut suffix)?;
        Ok(ArchiveId(format!(
            "{}-{}",
            created.format("%Y%m%dT%H%M%SZ"),
            hex::encode(suffix)
        )))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveId({})", self.0)
    }
}

impl FromStr for ArchiveId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let ok = b.len() == 25
            && digits(0..8)
            && b[8] == b'T'
            && digits(9..15)
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ok {
            Ok(ArchiveId(s.to_owned()))
        } else {
            Err(Error::InvalidArchiveId { id: s.to_owned() })
        }
    }
}

impl Serialize for ArchiveId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ArchiveId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn archive_ids_sort_by_time() {
        let t1 = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let t2 = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 6).unwrap();
        let a = ArchiveId::generate(t1).unwrap();
        let b = ArchiveId::generate(t2).unwrap();
        assert!(a.as_str().starts_with("20240102T030405Z-"), "{a}");
        assert!(a < b);
        assert_eq!(a.as_str().parse::<ArchiveId>().unwrap(), a);
        for bad in [
            "",
            "20240102T030405Z",
            "20240102T030405Z-ABCDEF12",
            "x0240102T030405Z-abcdef12",
        ] {
            assert!(bad.parse::<ArchiveId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chunk_id_hex_round_trip() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!("AB".repeat(32).parse::<ChunkId>().is_err());
        assert!("ab".repeat(31).parse::<ChunkId>().is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", "ab".repeat(32))
        );
    }
}
