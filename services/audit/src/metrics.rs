//! The audit service's own metrics, served at `/metrics` beside the per-RPC ones.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of the chain.
#[derive(Clone, Debug)]
pub(crate) struct AuditMetrics {
    appended: IntCounterVec,
    head_sequence: IntGauge,
    spooled: IntGauge,
    verifications: IntCounterVec,
}

impl AuditMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let appended = IntCounterVec::new(
            Opts::new(
                "audit_records_appended_total",
                "Records appended to the chain, by where they became durable.",
            ),
            &["durability"],
        )?;
        let head_sequence = IntGauge::new(
            "audit_head_sequence",
            "Sequence number of the last record the writer wrote.",
        )?;
        let spooled = IntGauge::new(
            "audit_spooled_records",
            "Records in the local spool waiting for the primary store.",
        )?;
        let verifications = IntCounterVec::new(
            Opts::new(
                "audit_verifications_total",
                "Chain verifications, by result (ok, broken).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(appended.clone()))?;
        registry.register(Box::new(head_sequence.clone()))?;
        registry.register(Box::new(spooled.clone()))?;
        registry.register(Box::new(verifications.clone()))?;
        Ok(Self {
            appended,
            head_sequence,
            spooled,
            verifications,
        })
    }

    pub(crate) fn appended(&self, durability: &str, records: usize, head: u64, spooled: u64) {
        self.appended
            .with_label_values(&[durability])
            .inc_by(records as u64);
        self.observe(head, spooled);
    }

    pub(crate) fn observe(&self, head: u64, spooled: u64) {
        self.head_sequence
            .set(i64::try_from(head).unwrap_or(i64::MAX));
        self.spooled.set(i64::try_from(spooled).unwrap_or(i64::MAX));
    }

    pub(crate) fn verified(&self, ok: bool) {
        self.verifications
            .with_label_values(&[if ok { "ok" } else { "broken" }])
            .inc();
    }
}
