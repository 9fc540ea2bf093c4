//! The risk score: a weighted sum of named factors, each 0..1, weights summing to 1, and the
//! outcome rules that turn checks, risk and the sandbox state into approve, needs-human or reject.

use crate::model::{CheckStatus, Factor, Outcome, Strategy};

/// What the score is computed from.
#[derive(Clone, Debug)]
pub(crate) struct RiskInputs {
    pub(crate) changed_lines: u32,
    pub(crate) max_changed_lines: u32,
    pub(crate) files: usize,
    pub(crate) strategy: Strategy,
    /// `None` when the stage did not run.
    pub(crate) tests: Option<CheckStatus>,
    pub(crate) replay: Option<ReplayFacts>,
    pub(crate) criticality: f64,
    pub(crate) dependents: u32,
}

/// What the replay found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayFacts {
    pub(crate) failing: usize,
    pub(crate) fixed: usize,
    pub(crate) passing: usize,
    pub(crate) changed: usize,
}

/// The factors, in a fixed order.
pub(crate) fn factors(inputs: &RiskInputs) -> Vec<Factor> {
    let size = f64::from(inputs.changed_lines) / f64::from(inputs.max_changed_lines.max(1));
    let files = (inputs.files.saturating_sub(1) as f64 / 4.0).min(1.0);
    let (strategy, strategy_note) = match inputs.strategy {
        Strategy::Template => (
            0.1,
            "a template fix: a local, reviewed rewrite of the failing line",
        ),
        Strategy::PartialRevert => (
            0.45,
            "a partial revert: drops the part of the culprit commit around the fault, and with it that part of the feature",
        ),
        Strategy::FullRevert => (
            0.6,
            "a full revert: drops everything the culprit commit added, the feature with the bug",
        ),
        Strategy::Mutation => (0.5, "a mutation: a generated change with no precedent"),
        Strategy::Llm => (0.7, "a model-written change: least predictable"),
        Strategy::Unspecified => (0.8, "no strategy given: unknown provenance"),
    };
    let (tests, tests_note) = match inputs.tests {
        Some(CheckStatus::Passed) => (0.0, "the target's test suite passes".to_owned()),
        Some(CheckStatus::Skipped) => (
            0.6,
            "the target has no test command: nothing beyond the build and replay vouches for it"
                .to_owned(),
        ),
        Some(CheckStatus::Failed) => (1.0, "the test suite fails".to_owned()),
        None => (1.0, "the tests did not run".to_owned()),
    };
    let (replay, replay_note) = match inputs.replay {
        None => (1.0, "the replay did not run".to_owned()),
        Some(r) if r.failing == 0 && r.passing == 0 => (
            0.5,
            "no captured requests: the fix is not shown to cure the failure".to_owned(),
        ),
        Some(r) => {
            let unfixed = if r.failing == 0 {
                0.5
            } else {
                (r.failing - r.fixed) as f64 / r.failing as f64
            };
            let changed = if r.passing == 0 {
                0.0
            } else {
                r.changed as f64 / r.passing as f64
            };
            let value = if r.changed > 0 {
                (0.7 + 0.3 * changed).max(unfixed)
            } else {
                unfixed
            };
            let mut note = format!(
                "{} of {} failing requests now succeed; {} of {} passing requests answer differently",
                r.fixed, r.failing, r.changed, r.passing
            );
            if r.failing == 0 {
                note.push_str(" (no failing request to show the fix works)");
            }
            (value, note)
        }
    };
    let criticality = inputs.criticality.clamp(0.0, 1.0);
    let dependents = f64::from(inputs.dependents);
    let blast = dependents / (dependents + 3.0);
    vec![
        Factor {
            name: "diff_size",
            weight: 0.10,
            value: size.min(1.0),
            explanation: format!(
                "{} changed lines of the {} allowed",
                inputs.changed_lines, inputs.max_changed_lines
            ),
        },
        Factor {
            name: "files_touched",
            weight: 0.05,
            value: files,
            explanation: format!("{} file(s) touched", inputs.files),
        },
        Factor {
            name: "strategy",
            weight: 0.15,
            value: strategy,
            explanation: strategy_note.to_owned(),
        },
        Factor {
            name: "tests",
            weight: 0.15,
            value: tests,
            explanation: tests_note,
        },
        Factor {
            name: "replay",
            weight: 0.30,
            value: replay,
            explanation: replay_note,
        },
        Factor {
            name: "service_criticality",
            weight: 0.15,
            value: criticality,
            explanation: format!("the service's criticality is {criticality:.2}"),
        },
        Factor {
            name: "blast_radius",
            weight: 0.10,
            value: blast,
            explanation: format!("{} service(s) depend on this one", inputs.dependents),
        },
    ]
}

/// The weighted sum, 0..1.
pub(crate) fn score(factors: &[Factor]) -> f64 {
    factors
        .iter()
        .map(|f| f.weight * f.value.clamp(0.0, 1.0))
        .sum::<f64>()
        .clamp(0.0, 1.0)
}

/// What decides the outcome besides the score.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutcomeRules {
    pub(crate) approve_threshold: f64,
    pub(crate) reject_threshold: f64,
}

/// Approve, needs-human or reject, with the reason.
pub(crate) fn outcome(
    rules: OutcomeRules,
    risk: f64,
    failed_check: Option<&str>,
    sandboxed: bool,
    behaviour_changes: usize,
) -> (Outcome, String) {
    if let Some(check) = failed_check {
        return (Outcome::Reject, format!("the {check} check failed"));
    }
    if risk > rules.reject_threshold {
        return (
            Outcome::Reject,
            format!(
                "risk {risk:.2} is above the reject threshold {:.2}",
                rules.reject_threshold
            ),
        );
    }
    if behaviour_changes > 0 {
        return (
            Outcome::NeedsHuman,
            format!(
                "it changes the answer of {behaviour_changes} request(s) that worked before: a behaviour change a human must accept"
            ),
        );
    }
    if !sandboxed {
        return (
            Outcome::NeedsHuman,
            "it was built and run without the network sandbox".to_owned(),
        );
    }
    if risk > rules.approve_threshold {
        return (
            Outcome::NeedsHuman,
            format!(
                "risk {risk:.2} is between the approve threshold {:.2} and the reject threshold {:.2}",
                rules.approve_threshold, rules.reject_threshold
            ),
        );
    }
    (
        Outcome::Approve,
        format!(
            "every check passed and risk {risk:.2} is at most the approve threshold {:.2}",
            rules.approve_threshold
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(strategy: Strategy, replay: ReplayFacts) -> RiskInputs {
        RiskInputs {
            changed_lines: 2,
            max_changed_lines: 40,
            files: 1,
            strategy,
            tests: Some(CheckStatus::Passed),
            replay: Some(replay),
            criticality: 0.5,
            dependents: 2,
        }
    }

    const RULES: OutcomeRules = OutcomeRules {
        approve_threshold: 0.3,
        reject_threshold: 0.7,
    };

    #[test]
    fn weights_sum_to_one() {
        let f = factors(&inputs(Strategy::Template, ReplayFacts::default()));
        let total: f64 = f.iter().map(|f| f.weight).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_template_fix_that_cures_every_request_is_approved() {
        let replay = ReplayFacts {
            failing: 3,
            fixed: 3,
            passing: 3,
            changed: 0,
        };
        let risk = score(&factors(&inputs(Strategy::Template, replay)));
        assert!(risk <= 0.3, "{risk}");
        assert_eq!(outcome(RULES, risk, None, true, 0).0, Outcome::Approve);
        assert_eq!(outcome(RULES, risk, None, false, 0).0, Outcome::NeedsHuman);
    }

    #[test]
    fn a_revert_that_changes_working_answers_scores_higher_and_needs_a_human() {
        let fixed = ReplayFacts {
            failing: 3,
            fixed: 3,
            passing: 3,
            changed: 0,
        };
        let changed = ReplayFacts {
            changed: 2,
            ..fixed
        };
        let template = score(&factors(&inputs(Strategy::Template, fixed)));
        let revert = score(&factors(&inputs(Strategy::FullRevert, changed)));
        assert!(revert > template + 0.2, "{revert} vs {template}");
        assert_eq!(outcome(RULES, revert, None, true, 2).0, Outcome::NeedsHuman);
    }

    #[test]
    fn a_failed_check_rejects_whatever_the_score() {
        let (o, why) = outcome(RULES, 0.0, Some("build"), true, 0);
        assert_eq!(o, Outcome::Reject);
        assert!(why.contains("build"));
        assert_eq!(outcome(RULES, 0.8, None, true, 0).0, Outcome::Reject);
    }
}
