//! Human-readable reports: the decision log of an incident and the outcome of a verification,
//! as plain text for terminals (`selfheal explain`, `selfheal audit verify`).

use std::fmt::Write;

use crate::chain::verify::VerifyReport;
use crate::chain::{Decision, Record};

/// Cells in a weight bar.
const BAR_WIDTH: usize = 10;

/// A 0..1 value as a bar and a number: `██████░░░░ 0.60`.
pub fn bar(value: f64) -> String {
    let clamped = if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (clamped * BAR_WIDTH as f64).round() as usize;
    format!(
        "{}{} {clamped:.2}",
        "█".repeat(filled),
        "░".repeat(BAR_WIDTH - filled)
    )
}

/// Confidence in words: high (≥ 0.8), medium (≥ 0.5), low.
pub fn confidence_words(confidence: f64) -> &'static str {
    if confidence >= 0.8 {
        "high"
    } else if confidence >= 0.5 {
        "medium"
    } else {
        "low"
    }
}

/// The decision log of `records` (records without a decision are skipped), in their order:
/// for each decision its inputs with notes, weighted factors drawn as bars, constraints,
/// alternatives with why they were not taken, outcome, reasoning and confidence.
pub fn render_decision_report(records: &[Record]) -> String {
    let decisions: Vec<(&Record, &Decision)> = records
        .iter()
        .filter_map(|record| Some((record, record.decision.as_ref()?)))
        .collect();
    let mut out = String::new();
    let incident = decisions
        .first()
        .map(|(record, _)| record.incident_id.as_str())
        .filter(|id| !id.is_empty());
    let _ = match incident {
        Some(id) => writeln!(out, "Decision log for incident {id}"),
        None => writeln!(out, "Decision log"),
    };
    let _ = writeln!(
        out,
        "{} decision{}",
        decisions.len(),
        if decisions.len() == 1 { "" } else { "s" }
    );
    for (index, (record, decision)) in decisions.iter().enumerate() {
        out.push('\n');
        render_decision(&mut out, index + 1, record, decision);
    }
    out
}

fn render_decision(out: &mut String, number: usize, record: &Record, decision: &Decision) {
    let title = decision.kind.label().to_uppercase();
    let _ = writeln!(out, "{number}. {title} — {}", decision.subject);
    let mut context = vec![
        format!("record #{}", record.sequence),
        record.time.to_string(),
    ];
    for (label, value) in [
        ("saga", &record.saga_id),
        ("step", &record.step),
        ("by", &record.actor),
    ] {
        if !value.is_empty() {
            context.push(format!("{label} {value}"));
        }
    }
    let _ = writeln!(out, "   {}", context.join(" · "));
    if !decision.inputs.is_empty() {
        let _ = writeln!(out, "   Inputs");
        for input in &decision.inputs {
            let note = if input.note.is_empty() {
                String::new()
            } else {
                format!("  — {}", input.note)
            };
            let _ = writeln!(out, "     • {} = {}{note}", input.name, input.value);
        }
    }
    if !decision.factors.is_empty() {
        let _ = writeln!(out, "   Factors (weight, score)");
        let width = decision
            .factors
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(0);
        for factor in &decision.factors {
            let _ = writeln!(
                out,
                "     {:<width$}  {}  score {:.2}",
                factor.name,
                bar(factor.weight),
                factor.score
            );
            if !factor.explanation.is_empty() {
                let _ = writeln!(out, "     {:<width$}  {}", "", factor.explanation);
            }
        }
    }
    if !decision.constraints.is_empty() {
        let _ = writeln!(out, "   Constraints");
        for constraint in &decision.constraints {
            let _ = writeln!(out, "     • {constraint}");
        }
    }
    if !decision.alternatives.is_empty() {
        let _ = writeln!(out, "   Alternatives considered");
        for alternative in &decision.alternatives {
            let _ = writeln!(
                out,
                "     ✗ {} (score {:.2}) — why not: {}",
                alternative.option, alternative.score, alternative.why_not
            );
        }
    }
    let _ = writeln!(out, "   Outcome: {}", decision.outcome);
    if !decision.reasoning.is_empty() {
        let _ = writeln!(out, "   Reasoning: {}", decision.reasoning);
    }
    let _ = writeln!(
        out,
        "   Confidence: {} ({:.2})",
        confidence_words(decision.confidence),
        decision.confidence
    );
}

/// The outcome of a verification: intact (with counts, head, unsigned and spooled tail) or
/// broken (where, why, and what to do).
pub fn render_verify_report(report: &VerifyReport) -> String {
    let mut out = String::new();
    match &report.broken {
        None => {
            let _ = writeln!(
                out,
                "Audit chain intact: {} records checked, {} checkpoint signatures verified",
                report.records_checked, report.checkpoints_checked
            );
            if report.head.sequence > 0 {
                let _ = writeln!(out, "Head: #{} {}", report.head.sequence, report.head.hash);
            } else {
                let _ = writeln!(out, "The chain is empty");
            }
            if report.unsigned_tail > 0 {
                let _ = writeln!(
                    out,
                    "{} records after the last checkpoint are chained but not yet signed",
                    report.unsigned_tail
                );
            }
        }
        Some(broken) => {
            let _ = writeln!(
                out,
                "Audit chain BROKEN at record #{}: {}",
                broken.sequence,
                broken.reason.label()
            );
            let _ = writeln!(out, "  {}", broken.detail);
            let _ = writeln!(
                out,
                "{} records and {} checkpoint signatures held before the break",
                report.records_checked, report.checkpoints_checked
            );
            let _ = writeln!(
                out,
                "Automation must stop: the record trail can no longer be trusted. Inspect the store from record #{} on.",
                broken.sequence
            );
        }
    }
    if report.spooled > 0 {
        let _ = writeln!(
            out,
            "{} records are still in the local spool, waiting for the primary store",
            report.spooled
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::verify::{BreakReason, ChainBreak};
    use crate::chain::{
        ChainHead, DecisionAlternative, DecisionFactor, DecisionInput, DecisionKind, NewRecord,
        RecordKind, RecordTime,
    };

    fn decision_record() -> Record {
        let decision = Decision {
            id: "d-1".into(),
            kind: DecisionKind::RootCause,
            subject: "payment-service error rate 15.2%".into(),
            inputs: vec![DecisionInput {
                name: "error_rate".into(),
                value: "15.2%".into(),
                note: "7.6× the 2% baseline".into(),
            }],
            factors: vec![DecisionFactor {
                name: "stack trace".into(),
                weight: 0.6,
                score: 0.9,
                explanation: "unwrap on None at src/pay.rs:237".into(),
            }],
            constraints: vec!["no schema changes".into()],
            alternatives: vec![DecisionAlternative {
                option: "database latency".into(),
                why_not: "p99 unchanged".into(),
                score: 0.1,
            }],
            outcome: "commit abc123 introduced the fault".into(),
            reasoning: "the failing line was added by abc123".into(),
            confidence: 0.92,
            decided_at: None,
        };
        let mut head = ChainHead::genesis();
        head.seal(
            NewRecord {
                incident_id: "inc-7".into(),
                decision: Some(decision),
                ..NewRecord::new(RecordKind::Decision)
            },
            RecordTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn bars_show_the_weight_in_tenths_and_numbers() {
        assert_eq!(bar(0.6), "██████░░░░ 0.60");
        assert_eq!(bar(0.0), "░░░░░░░░░░ 0.00");
        assert_eq!(bar(1.5), "██████████ 1.00");
    }

    #[test]
    fn confidence_is_put_in_words() {
        assert_eq!(confidence_words(0.8), "high");
        assert_eq!(confidence_words(0.5), "medium");
        assert_eq!(confidence_words(0.49), "low");
    }

    #[test]
    fn decision_report_shows_every_part_of_a_decision() {
        let text = render_decision_report(&[decision_record()]);
        for needle in [
            "Decision log for incident inc-7",
            "ROOT CAUSE — payment-service error rate 15.2%",
            "error_rate = 15.2%  — 7.6× the 2% baseline",
            "██████░░░░ 0.60",
            "✗ database latency (score 0.10) — why not: p99 unchanged",
            "Outcome: commit abc123 introduced the fault",
            "Confidence: high (0.92)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn verify_report_names_the_break() {
        let report = VerifyReport {
            records_checked: 4,
            checkpoints_checked: 0,
            head: ChainHead::genesis(),
            broken: Some(ChainBreak {
                sequence: 5,
                reason: BreakReason::Gap,
                detail: "sequence 5 is missing".into(),
            }),
            unsigned_tail: 0,
            spooled: 0,
        };
        let text = render_verify_report(&report);
        assert!(text.contains("BROKEN at record #5: gap"), "{text}");
    }
}
