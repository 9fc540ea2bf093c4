//! Verification of a stored chain, one stored slot at a time, stopping at the first break.
//!
//! Stores hand the verifier their records in storage order (file: line by line; Elasticsearch:
//! by document id), as raw text, so that the verifier judges what is actually stored. For each
//! slot it checks, in order: the slot holds a record; its sequence is the next one expected
//! (a later one is a gap, unless the missing one turns up in the very next slot, which makes it
//! a reorder; an earlier one is a reorder or duplicate); its hash matches its content; its
//! stored bytes are exactly canonical; its `prev_hash` is the previous record's hash; and for a
//! checkpoint, that its signature verifies with the configured key and that no more records
//! preceded it than its signed interval allows.

use ed25519_dalek::VerifyingKey;

use super::checkpoint::verify_checkpoint;
use super::{ChainHead, FIRST_SEQUENCE, Record, RecordKind};

/// Why a chain is broken at a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakReason {
    HashMismatch,
    PrevHashMismatch,
    Gap,
    Reorder,
    BadSignature,
}

impl BreakReason {
    /// A short human label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HashMismatch => "hash mismatch",
            Self::PrevHashMismatch => "previous-hash mismatch",
            Self::Gap => "gap",
            Self::Reorder => "reorder",
            Self::BadSignature => "bad signature",
        }
    }
}

/// The first place a chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number at which the chain stops holding.
    pub sequence: u64,
    pub reason: BreakReason,
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records (checkpoints included) that were checked and hold.
    pub records_checked: u64,
    /// Checkpoints whose signatures verified.
    pub checkpoints_checked: u64,
    /// The last record that holds.
    pub head: ChainHead,
    /// Where the chain breaks, if it does.
    pub broken: Option<ChainBreak>,
    /// Records after the last checkpoint (covered by the chain, not yet by a signature).
    pub unsigned_tail: u64,
    /// Records that are still only in the local spool (included in the walk).
    pub spooled: u64,
}

impl VerifyReport {
    /// Whether the whole chain holds.
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// One storage slot: its position in storage order (line number, document id; from 1) and the
/// raw stored text, or `None` when the slot is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub position: u64,
    pub raw: Option<String>,
}

/// Walks a chain slot by slot.
#[derive(Debug)]
pub struct Verifier {
    key: VerifyingKey,
    tail_interval: u64,
    expected: u64,
    head: ChainHead,
    records_checked: u64,
    checkpoints_checked: u64,
    since_checkpoint: u64,
    /// A record with a higher sequence than expected: (expected, seen). Decided by the next slot.
    pending: Option<(u64, u64)>,
    /// A head the chain must pass through (what this service itself wrote last).
    must_contain: Option<ChainHead>,
    broken: Option<ChainBreak>,
}

impl Verifier {
    /// `key` verifies checkpoints; records after the last checkpoint may number at most
    /// `tail_interval`.
    pub fn new(key: VerifyingKey, tail_interval: u64) -> Self {
        Self {
            key,
            tail_interval,
            expected: FIRST_SEQUENCE,
            head: ChainHead::genesis(),
            records_checked: 0,
            checkpoints_checked: 0,
            since_checkpoint: 0,
            pending: None,
            must_contain: None,
            broken: None,
        }
    }

    /// Also requires the chain to reach `head` (sequence and hash), e.g. the head the writer
    /// knows it wrote, so that a truncated or replaced tail is caught.
    pub fn must_contain(mut self, head: ChainHead) -> Self {
        if head.sequence > 0 {
            self.must_contain = Some(head);
        }
        self
    }

    /// Whether a break has been found (further slots are ignored).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn fail(&mut self, sequence: u64, reason: BreakReason, detail: String) {
        if self.broken.is_none() {
            self.broken = Some(ChainBreak {
                sequence,
                reason,
                detail,
            });
        }
    }

    /// Checks the next slot in storage order.
    pub fn push(&mut self, slot: &Slot) {
        if self.broken.is_some() {
            return;
        }
        let expected = self.expected;
        let parsed = slot.raw.as_deref().map(Record::from_json);
        if let Some((missing, seen)) = self.pending.take() {
            let next_sequence = match &parsed {
                Some(Ok(record)) => Some(record.sequence),
                _ => None,
            };
            match next_sequence {
                Some(next) if next < seen => self.fail(
                    missing,
                    BreakReason::Reorder,
                    format!(
                        "sequence {seen} is stored before sequence {next} (expected {missing} first)"
                    ),
                ),
                _ => self.fail(
                    missing,
                    BreakReason::Gap,
                    format!("sequence {missing} is missing: the next stored record is {seen}"),
                ),
            }
            return;
        }
        let (raw, record) = match (slot.raw.as_deref(), parsed) {
            (None, _) | (_, None) => {
                return self.fail(
                    expected,
                    BreakReason::Gap,
                    format!(
                        "sequence {expected} is missing: storage position {} is empty",
                        slot.position
                    ),
                );
            }
            (Some(_), Some(Err(error))) => {
                return self.fail(
                    expected,
                    BreakReason::HashMismatch,
                    format!(
                        "the record at storage position {} cannot be read: {error}",
                        slot.position
                    ),
                );
            }
            (Some(raw), Some(Ok(record))) => (raw, record),
        };
        if record.sequence < expected {
            return self.fail(
                expected,
                BreakReason::Reorder,
                format!(
                    "sequence {} appears again at storage position {} where {expected} was expected",
                    record.sequence, slot.position
                ),
            );
        }
        if record.sequence > expected {
            self.pending = Some((expected, record.sequence));
            return;
        }
        match record.compute_hash() {
            Ok(hash) if hash == record.hash => {}
            Ok(hash) => {
                return self.fail(
                    expected,
                    BreakReason::HashMismatch,
                    format!(
                        "stored hash is {} but the record's content hashes to {hash}",
                        record.hash
                    ),
                );
            }
            Err(error) => {
                return self.fail(expected, BreakReason::HashMismatch, error.to_string());
            }
        }
        match record.to_canonical_json() {
            Ok(canonical) if canonical == raw => {}
            _ => {
                return self.fail(
                    expected,
                    BreakReason::HashMismatch,
                    "the stored bytes are not the record's canonical encoding".to_owned(),
                );
            }
        }
        if record.prev_hash != self.head.hash {
            return self.fail(
                expected,
                BreakReason::PrevHashMismatch,
                format!(
                    "prev_hash is {} but the previous record's hash is {}",
                    record.prev_hash, self.head.hash
                ),
            );
        }
        if record.kind == RecordKind::Checkpoint {
            match verify_checkpoint(&record, &self.key) {
                Ok(payload) if self.since_checkpoint > payload.interval => {
                    return self.fail(
                        expected,
                        BreakReason::BadSignature,
                        format!(
                            "{} records precede this checkpoint, more than its signed interval of {}",
                            self.since_checkpoint, payload.interval
                        ),
                    );
                }
                Ok(_) => {
                    self.checkpoints_checked += 1;
                    self.since_checkpoint = 0;
                }
                Err(error) => {
                    return self.fail(expected, BreakReason::BadSignature, error.to_string());
                }
            }
        } else {
            self.since_checkpoint += 1;
        }
        if let Some(must) = &self.must_contain
            && must.sequence == record.sequence
            && must.hash != record.hash
        {
            let detail = format!(
                "stored hash {} differs from the hash {} this service wrote at this sequence",
                record.hash, must.hash
            );
            return self.fail(expected, BreakReason::HashMismatch, detail);
        }
        self.head = ChainHead::of(&record);
        self.expected += 1;
        self.records_checked += 1;
    }

    /// Ends the walk and reports.
    pub fn finish(mut self) -> VerifyReport {
        if let Some((missing, seen)) = self.pending.take() {
            self.fail(
                missing,
                BreakReason::Gap,
                format!("sequence {missing} is missing: the next stored record is {seen}"),
            );
        }
        if let Some(must) = self.must_contain.clone()
            && self.head.sequence < must.sequence
        {
            let next = self.head.sequence + 1;
            self.fail(
                next,
                BreakReason::Gap,
                format!(
                    "the store ends at sequence {} but this service wrote up to {}",
                    self.head.sequence, must.sequence
                ),
            );
        }
        if self.since_checkpoint > self.tail_interval {
            let first_unsigned =
                self.head.sequence - self.since_checkpoint + self.tail_interval + 1;
            self.fail(
                first_unsigned,
                BreakReason::BadSignature,
                format!(
                    "{} records follow the last checkpoint, more than the interval of {}",
                    self.since_checkpoint, self.tail_interval
                ),
            );
        }
        VerifyReport {
            records_checked: self.records_checked,
            checkpoints_checked: self.checkpoints_checked,
            head: self.head,
            broken: self.broken,
            unsigned_tail: self.since_checkpoint,
            spooled: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::CheckpointSigner;
    use crate::chain::{NewRecord, RecordTime};

    fn chain(signer: &CheckpointSigner, notes: usize, interval: u64) -> Vec<Record> {
        let mut head = ChainHead::genesis();
        let mut out = Vec::new();
        let mut since = 0;
        for n in 0..notes {
            let new = NewRecord {
                payload: serde_json::json!({ "n": n }),
                ..NewRecord::new(RecordKind::Note)
            };
            out.push(head.seal(new, RecordTime::now()).unwrap());
            since += 1;
            if since == interval {
                let checkpoint = signer.checkpoint(&head, interval);
                out.push(head.seal(checkpoint, RecordTime::now()).unwrap());
                since = 0;
            }
        }
        out
    }

    fn slots(records: &[Record]) -> Vec<Slot> {
        records
            .iter()
            .enumerate()
            .map(|(index, record)| Slot {
                position: index as u64 + 1,
                raw: Some(record.to_canonical_json().unwrap()),
            })
            .collect()
    }

    fn verify(signer: &CheckpointSigner, slots: &[Slot]) -> VerifyReport {
        let mut verifier = Verifier::new(signer.verifying_key(), 5);
        for slot in slots {
            verifier.push(slot);
        }
        verifier.finish()
    }

    #[test]
    fn an_untouched_chain_holds() {
        let signer = CheckpointSigner::generate().unwrap();
        let report = verify(&signer, &slots(&chain(&signer, 12, 5)));
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.records_checked, 14);
        assert_eq!(report.checkpoints_checked, 2);
        assert_eq!(report.unsigned_tail, 2);
    }

    #[test]
    fn a_missing_record_is_a_gap_and_two_swapped_records_are_a_reorder() {
        let signer = CheckpointSigner::generate().unwrap();
        let records = chain(&signer, 8, 5);
        let mut deleted = slots(&records);
        deleted.remove(2);
        let report = verify(&signer, &deleted);
        let broken = report.broken.unwrap();
        assert_eq!((broken.sequence, broken.reason), (3, BreakReason::Gap));

        let mut swapped = slots(&records);
        swapped.swap(2, 3);
        let broken = verify(&signer, &swapped).broken.unwrap();
        assert_eq!((broken.sequence, broken.reason), (3, BreakReason::Reorder));
    }

    #[test]
    fn a_consistent_rewrite_with_another_key_fails_at_the_first_checkpoint() {
        let signer = CheckpointSigner::generate().unwrap();
        let forger = CheckpointSigner::generate().unwrap();
        let forged = chain(&forger, 8, 5);
        let broken = verify(&signer, &slots(&forged)).broken.unwrap();
        assert_eq!(
            (broken.sequence, broken.reason),
            (6, BreakReason::BadSignature)
        );
    }

    #[test]
    fn a_chain_without_checkpoints_is_unsigned_beyond_the_interval() {
        let signer = CheckpointSigner::generate().unwrap();
        let records = chain(&signer, 7, 100);
        let broken = verify(&signer, &slots(&records)).broken.unwrap();
        assert_eq!(
            (broken.sequence, broken.reason),
            (6, BreakReason::BadSignature)
        );
    }
}
