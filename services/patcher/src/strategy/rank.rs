//! The last step of a request: past fixes raise the prior of the strategies and templates that
//! fixed similar incidents before, identical diffs are kept once (the more trusted one), and the
//! candidates are ordered by confidence and cut to the number asked for.

use std::collections::HashMap;

use super::{Candidates, CauseKind, FixRequest, PastFix, Strategy};

/// The most past fixes can add to one candidate's confidence.
const MAX_BOOST: f64 = 0.15;
/// Confidence never reaches certainty.
const MAX_CONFIDENCE: f64 = 0.99;

pub(super) fn finish(out: &mut Candidates, request: &FixRequest) {
    for candidate in &mut out.candidates {
        let (boost, reasons) = prior(request, candidate.strategy, &candidate.template);
        if boost > 0.0 {
            candidate.confidence = (candidate.confidence + boost).min(MAX_CONFIDENCE);
            candidate.rationale = format!(
                "{}; raised by past fixes: {}",
                candidate.rationale,
                reasons.join("; ")
            );
        }
    }
    out.candidates.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| order(a.strategy).cmp(&order(b.strategy)))
            .then_with(|| a.id.cmp(&b.id))
    });

    let mut seen: HashMap<String, String> = HashMap::new();
    let mut notes = Vec::new();
    out.candidates
        .retain(|candidate| match seen.entry(normalise(&candidate.diff)) {
            std::collections::hash_map::Entry::Occupied(kept) => {
                notes.push(format!(
                    "{} {} is identical to {}; kept one",
                    candidate.strategy.name(),
                    candidate.id,
                    kept.get()
                ));
                false
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(candidate.id.clone());
                true
            }
        });
    out.notes.extend(notes);
    let max = request.max_candidates.max(1);
    if out.candidates.len() > max {
        out.notes.push(format!(
            "kept the {max} most confident of {} candidates",
            out.candidates.len()
        ));
        out.candidates.truncate(max);
    }
}

/// The boost past fixes give a candidate, and why.
fn prior(request: &FixRequest, strategy: Strategy, template: &str) -> (f64, Vec<String>) {
    let mut boost: f64 = 0.0;
    let mut reasons = Vec::new();
    for fix in request.past_fixes.iter().filter(|f| similar(request, f)) {
        let same_service = !request.service.is_empty() && fix.service == request.service;
        let weight = if same_service { 1.0 } else { 0.6 };
        let scope = if same_service {
            format!("same service {}", fix.service)
        } else {
            format!("same cause kind, service {}", fix.service)
        };
        let incident = if fix.incident_id.is_empty() {
            "an earlier incident".to_owned()
        } else {
            format!("incident {}", fix.incident_id)
        };
        if !template.is_empty() && fix.template == template {
            boost += 0.1 * weight;
            reasons.push(format!(
                "{incident} ({scope}) was fixed by template {template}"
            ));
        } else if fix.strategy == Some(strategy) && fix.template.is_empty() {
            // A past fix naming a template vouches for that template only.
            boost += 0.06 * weight;
            reasons.push(format!(
                "{incident} ({scope}) was fixed by a {}",
                strategy.name().replace('_', " ")
            ));
        }
    }
    (boost.min(MAX_BOOST), reasons)
}

fn similar(request: &FixRequest, fix: &PastFix) -> bool {
    (!request.service.is_empty() && fix.service == request.service)
        || (request.cause_kind != CauseKind::Unspecified && fix.cause_kind == request.cause_kind)
}

/// Among equally confident candidates, the smaller and more targeted change first.
fn order(strategy: Strategy) -> u8 {
    match strategy {
        Strategy::Template => 0,
        Strategy::PartialRevert => 1,
        Strategy::Llm => 2,
        Strategy::FullRevert => 3,
        Strategy::Mutation => 4,
    }
}

/// Diffs that differ only in headers, context or trailing space are the same fix.
fn normalise(diff: &str) -> String {
    diff.lines()
        .filter(|line| line.starts_with('+') || line.starts_with('-'))
        .filter(|line| !line.starts_with("+++") && !line.starts_with("---"))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Candidate;

    fn candidate(
        id: &str,
        strategy: Strategy,
        template: &str,
        confidence: f64,
        diff: &str,
    ) -> Candidate {
        Candidate {
            id: id.into(),
            strategy,
            diff: diff.into(),
            rationale: "r".into(),
            confidence,
            files: vec![],
            lines_added: 1,
            lines_removed: 1,
            template: template.into(),
        }
    }

    fn request(past_fixes: Vec<PastFix>) -> FixRequest {
        FixRequest {
            service: "payment-service".into(),
            cause_kind: CauseKind::CodeDefect,
            max_candidates: 2,
            past_fixes,
            ..Default::default()
        }
    }

    #[test]
    fn past_fixes_raise_the_matching_template_and_say_so() {
        let mut out = Candidates {
            candidates: vec![
                candidate(
                    "a",
                    Strategy::Template,
                    "rust.option_unwrap.unwrap_or_default",
                    0.7,
                    "-x\n+a",
                ),
                candidate("b", Strategy::PartialRevert, "", 0.7, "-x\n+b"),
                candidate("c", Strategy::Mutation, "mutation.boundary", 0.3, "-x\n+c"),
            ],
            notes: vec![],
        };
        let past = vec![
            PastFix {
                incident_id: "inc-1".into(),
                service: "payment-service".into(),
                cause_kind: CauseKind::CodeDefect,
                strategy: Some(Strategy::PartialRevert),
                template: String::new(),
            },
            PastFix {
                incident_id: "inc-2".into(),
                service: "other".into(),
                cause_kind: CauseKind::Configuration,
                strategy: Some(Strategy::Mutation),
                template: "mutation.boundary".into(),
            },
        ];
        finish(&mut out, &request(past));
        assert_eq!(out.candidates[0].id, "b");
        assert!((out.candidates[0].confidence - 0.76).abs() < 1e-9);
        assert!(
            out.candidates[0]
                .rationale
                .contains("incident inc-1 (same service payment-service)"),
            "{}",
            out.candidates[0].rationale
        );
        assert_eq!(out.candidates.len(), 2, "max_candidates");
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("kept the 2 most confident of 3"))
        );
        assert!(
            !out.candidates.iter().any(|c| c.rationale.contains("inc-2")),
            "a fix of another service and cause kind does not count"
        );
    }

    #[test]
    fn identical_diffs_keep_the_more_confident_candidate() {
        let mut out = Candidates {
            candidates: vec![
                candidate(
                    "full",
                    Strategy::FullRevert,
                    "",
                    0.5,
                    "diff --git a/f b/f\n-x\n+y \n",
                ),
                candidate(
                    "part",
                    Strategy::PartialRevert,
                    "",
                    0.7,
                    "--- a/f\n+++ b/f\n-x\n+y\n",
                ),
            ],
            notes: vec![],
        };
        finish(&mut out, &request(vec![]));
        assert_eq!(out.candidates.len(), 1);
        assert_eq!(out.candidates[0].id, "part");
        assert_eq!(
            out.notes,
            ["full_revert full is identical to part; kept one"]
        );
    }
}
