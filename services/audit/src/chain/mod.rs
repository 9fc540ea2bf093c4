//! The hash chain: what a record is, how it is encoded and hashed, how new records are sealed
//! onto the head, and how a stored chain is verified.
//!
//! # Canonical encoding
//!
//! A record is encoded as canonical JSON: the record as a JSON object with every object's keys
//! sorted by their UTF-8 bytes (recursively, payload included), no whitespace, strings and
//! numbers written as `serde_json` writes them, absent optional fields written as `null`.
//! `hash` is the lowercase hex SHA-256 of the canonical encoding of every field except `hash`.
//! Stores keep the canonical encoding of the whole record (with `hash`), so verification can
//! also check that the stored bytes are exactly canonical: any change to a stored byte either
//! breaks the JSON, changes a hashed value, or leaves a non-canonical encoding.
//!
//! This module owns no I/O: stores live in [`crate::store`], the single writer in
//! [`crate::log`].

pub mod checkpoint;
pub mod verify;

use std::fmt;
use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The sequence number of the first record. Sequences start at 1 so that 0 can mean "none"
/// on the wire.
pub const FIRST_SEQUENCE: u64 = 1;

/// What a record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordKind {
    StepStarted,
    StepFinished,
    StepFailed,
    Compensation,
    Decision,
    SagaState,
    /// A signed statement over the chain so far; written by the audit service itself.
    Checkpoint,
    Note,
}

impl RecordKind {
    /// The kind as written in the canonical encoding (`STEP_STARTED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StepStarted => "STEP_STARTED",
            Self::StepFinished => "STEP_FINISHED",
            Self::StepFailed => "STEP_FAILED",
            Self::Compensation => "COMPENSATION",
            Self::Decision => "DECISION",
            Self::SagaState => "SAGA_STATE",
            Self::Checkpoint => "CHECKPOINT",
            Self::Note => "NOTE",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A point in time as the chain writes it: RFC 3339, UTC, exactly six fractional digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordTime(OffsetDateTime);

impl RecordTime {
    /// Now, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// `datetime` in UTC, truncated to microseconds.
    pub fn from_datetime(datetime: OffsetDateTime) -> Self {
        let utc = datetime.to_offset(time::UtcOffset::UTC);
        let micros = utc.microsecond();
        Self(utc.replace_microsecond(micros).unwrap_or(utc))
    }

    /// Seconds and nanoseconds since the Unix epoch.
    pub fn unix(&self) -> (i64, u32) {
        (self.0.unix_timestamp(), self.0.nanosecond())
    }

    /// From seconds and nanoseconds since the Unix epoch; `None` when out of range.
    pub fn from_unix(seconds: i64, nanos: u32) -> Option<Self> {
        let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .map(Self::from_datetime)
    }

    /// The canonical text form.
    pub fn to_rfc3339(&self) -> String {
        self.0
            .format(TIME_FORMAT)
            .unwrap_or_else(|_| self.0.unix_timestamp().to_string())
    }

    /// Parses the canonical text form (and only that form).
    pub fn parse(text: &str) -> Option<Self> {
        time::PrimitiveDateTime::parse(text, TIME_FORMAT)
            .ok()
            .map(|t| Self(t.assume_utc()))
    }
}

impl fmt::Display for RecordTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for RecordTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordTime({self})")
    }
}

impl Serialize for RecordTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for RecordTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "time {text:?} is not RFC 3339 UTC with six fractional digits"
            ))
        })
    }
}

/// What kind of choice a decision was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionKind {
    Unspecified,
    RootCause,
    FixPlan,
    SafetyGate,
    CanaryAnalysis,
    Promotion,
    Rollback,
    Verification,
    Escalation,
}

impl DecisionKind {
    /// A short human label (`root cause`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "decision",
            Self::RootCause => "root cause",
            Self::FixPlan => "fix plan",
            Self::SafetyGate => "safety gate",
            Self::CanaryAnalysis => "canary analysis",
            Self::Promotion => "promotion",
            Self::Rollback => "rollback",
            Self::Verification => "verification",
            Self::Escalation => "escalation",
        }
    }
}

/// One input a decision looked at, with a note on what it means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    pub name: String,
    pub note: String,
    pub value: String,
}

/// A weighted factor; weight and score are within 0..=1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionFactor {
    pub explanation: String,
    pub name: String,
    pub score: f64,
    pub weight: f64,
}

/// An option considered and not taken, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionAlternative {
    pub option: String,
    pub score: f64,
    pub why_not: String,
}

/// Why an automated choice was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub alternatives: Vec<DecisionAlternative>,
    /// Within 0..=1.
    pub confidence: f64,
    pub constraints: Vec<String>,
    pub decided_at: Option<RecordTime>,
    pub factors: Vec<DecisionFactor>,
    pub id: String,
    pub inputs: Vec<DecisionInput>,
    pub kind: DecisionKind,
    pub outcome: String,
    pub reasoning: String,
    pub subject: String,
}

/// A record to append: the writer assigns sequence, time and hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    pub kind: RecordKind,
    pub saga_id: String,
    pub incident_id: String,
    pub step: String,
    pub actor: String,
    pub fencing_token: u64,
    /// A JSON object (or `null`).
    pub payload: serde_json::Value,
    pub decision: Option<Decision>,
    /// A repeated key returns the existing record instead of appending twice.
    pub idempotency_key: Option<String>,
}

impl NewRecord {
    /// A record of `kind` with every other field empty.
    pub fn new(kind: RecordKind) -> Self {
        Self {
            kind,
            saga_id: String::new(),
            incident_id: String::new(),
            step: String::new(),
            actor: String::new(),
            fencing_token: 0,
            payload: serde_json::Value::Null,
            decision: None,
            idempotency_key: None,
        }
    }
}

/// One link of the chain, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub actor: String,
    pub decision: Option<Decision>,
    pub fencing_token: u64,
    /// Hex SHA-256 of this record's canonical encoding without `hash`.
    pub hash: String,
    pub idempotency_key: Option<String>,
    pub incident_id: String,
    pub kind: RecordKind,
    #[serde(serialize_with = "serialize_sorted")]
    pub payload: serde_json::Value,
    /// Hex SHA-256 of the previous record; [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    pub saga_id: String,
    pub sequence: u64,
    pub step: String,
    pub time: RecordTime,
}

/// The fields of a record that its hash covers: all but `hash`.
#[derive(Serialize)]
struct HashedFields<'a> {
    actor: &'a str,
    decision: &'a Option<Decision>,
    fencing_token: u64,
    idempotency_key: &'a Option<String>,
    incident_id: &'a str,
    kind: RecordKind,
    #[serde(serialize_with = "serialize_sorted")]
    payload: &'a serde_json::Value,
    prev_hash: &'a str,
    saga_id: &'a str,
    sequence: u64,
    step: &'a str,
    time: RecordTime,
}

/// A JSON value serialized with every object's keys sorted, whatever `serde_json::Map` keeps.
struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value;
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

fn serialize_sorted<S: serde::Serializer>(
    value: &serde_json::Value,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Sorted(value).serialize(serializer)
}

/// An encoding failure: only non-finite numbers can cause one, and the gRPC edge rejects them.
#[derive(Debug, thiserror::Error)]
#[error("record cannot be encoded: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl Record {
    /// The hash this record should carry, computed from its other fields.
    ///
    /// Struct fields are declared in sorted key order and payload maps are sorted as they are
    /// written, so serializing directly yields the canonical encoding (a test checks this
    /// against [`write_canonical`]).
    pub fn compute_hash(&self) -> Result<String, EncodeError> {
        let fields = HashedFields {
            actor: &self.actor,
            decision: &self.decision,
            fencing_token: self.fencing_token,
            idempotency_key: &self.idempotency_key,
            incident_id: &self.incident_id,
            kind: self.kind,
            payload: &self.payload,
            prev_hash: &self.prev_hash,
            saga_id: &self.saga_id,
            sequence: self.sequence,
            step: &self.step,
            time: self.time,
        };
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, &fields)?;
        Ok(hex::encode(hasher.0.finalize()))
    }

    /// The canonical encoding of the whole record (with `hash`), as stores keep it.
    pub fn to_canonical_json(&self) -> Result<String, EncodeError> {
        let out = serde_json::to_vec(self)?;
        // serde_json only writes valid UTF-8.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Parses a stored record; the error says what is wrong with the text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `value` as canonical JSON: keys sorted by bytes, no whitespace. Sorting is done here
/// rather than relying on `serde_json::Map` ordering, which a `preserve_order` feature enabled
/// anywhere in the build would change.
pub fn write_canonical<W: Write>(out: &mut W, value: &serde_json::Value) -> serde_json::Result<()> {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            out.write_all(b"{").map_err(serde_json::Error::io)?;
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.write_all(b",").map_err(serde_json::Error::io)?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":").map_err(serde_json::Error::io)?;
                if let Some(item) = map.get(key) {
                    write_canonical(out, item)?;
                }
            }
            out.write_all(b"}").map_err(serde_json::Error::io)
        }
        Value::Array(items) => {
            out.write_all(b"[").map_err(serde_json::Error::io)?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",").map_err(serde_json::Error::io)?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]").map_err(serde_json::Error::io)
        }
        scalar => serde_json::to_writer(out, scalar),
    }
}

/// The last sealed record: where the next one attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence of the last record (0 for an empty chain).
    pub sequence: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self {
            sequence: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// The head after `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            sequence: record.sequence,
            hash: record.hash.clone(),
        }
    }

    /// Seals `new` onto this head at `time` and advances the head.
    pub fn seal(&mut self, new: NewRecord, time: RecordTime) -> Result<Record, EncodeError> {
        let mut record = Record {
            sequence: self.sequence + 1,
            time,
            kind: new.kind,
            saga_id: new.saga_id,
            incident_id: new.incident_id,
            step: new.step,
            actor: new.actor,
            fencing_token: new.fencing_token,
            payload: new.payload,
            decision: new.decision,
            idempotency_key: new.idempotency_key,
            prev_hash: self.hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash()?;
        *self = Self::of(&record);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(payload: serde_json::Value) -> NewRecord {
        NewRecord {
            payload,
            saga_id: "saga-1".into(),
            ..NewRecord::new(RecordKind::Note)
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        let value = serde_json::json!({"b": {"z": 1, "a": [ {"y": 2, "x": 3} ]}, "a": "s"});
        let mut out = Vec::new();
        write_canonical(&mut out, &value).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"s","b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn sealing_links_each_record_to_the_previous_hash() {
        let mut head = ChainHead::genesis();
        let time = RecordTime::now();
        let first = head.seal(note(serde_json::json!({"n": 1})), time).unwrap();
        let second = head.seal(note(serde_json::json!({"n": 2})), time).unwrap();
        assert_eq!(first.sequence, 1);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(second.compute_hash().unwrap(), second.hash);
        assert_eq!(head, ChainHead::of(&second));
    }

    #[test]
    fn stored_form_round_trips_to_the_same_bytes() {
        let mut head = ChainHead::genesis();
        let record = head
            .seal(
                note(serde_json::json!({"ratio": 0.152, "big": 1e300, "s": "é\n"})),
                RecordTime::now(),
            )
            .unwrap();
        let text = record.to_canonical_json().unwrap();
        let parsed = Record::from_json(&text).unwrap();
        assert_eq!(parsed, record);
        assert_eq!(parsed.to_canonical_json().unwrap(), text);
    }

    #[test]
    fn direct_encoding_equals_the_generic_canonical_encoding() {
        let mut head = ChainHead::genesis();
        let decision = Decision {
            alternatives: vec![DecisionAlternative {
                option: "revert".into(),
                score: 0.4,
                why_not: "loses a feature".into(),
            }],
            confidence: 0.7,
            constraints: vec!["small".into()],
            decided_at: Some(RecordTime::now()),
            factors: vec![DecisionFactor {
                explanation: "e".into(),
                name: "n".into(),
                score: 0.5,
                weight: 0.25,
            }],
            id: "d".into(),
            inputs: vec![DecisionInput {
                name: "a".into(),
                note: "b".into(),
                value: "c".into(),
            }],
            kind: DecisionKind::FixPlan,
            outcome: "o".into(),
            reasoning: "r".into(),
            subject: "s".into(),
        };
        let record = head
            .seal(
                NewRecord {
                    decision: Some(decision),
                    idempotency_key: Some("k".into()),
                    payload: serde_json::json!({"z": [{"b": 1, "a": null}], "a": {"y": 2.5, "x": "é"}}),
                    ..note(serde_json::Value::Null)
                },
                RecordTime::now(),
            )
            .unwrap();
        let generic = |value: serde_json::Value| {
            let mut out = Vec::new();
            write_canonical(&mut out, &value).unwrap();
            String::from_utf8(out).unwrap()
        };
        let mut value = serde_json::to_value(&record).unwrap();
        assert_eq!(record.to_canonical_json().unwrap(), generic(value.clone()));
        value.as_object_mut().unwrap().remove("hash");
        let expected = hex::encode(Sha256::digest(generic(value).as_bytes()));
        assert_eq!(record.hash, expected);
    }

    #[test]
    fn time_is_utc_with_six_fractional_digits() {
        let time = RecordTime::from_unix(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(time.to_rfc3339(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(RecordTime::parse("2023-11-14T22:13:20.123456Z"), Some(time));
        assert_eq!(RecordTime::parse("2023-11-14T22:13:20.12345Z"), None);
    }
}
