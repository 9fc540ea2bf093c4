//! Candidates over real gRPC on real git repositories: the payment-service demo bug, small
//! fixtures for the index, overflow and mutation strategies and for range locations, past
//! fixes, and requests that must be refused.

mod common;

use common::{applies, patcher, repository};
use selfheal_proto::v1::{
    CauseKind, CodeLocation, Commit, GenerateCandidatesRequest, PastFix, PatchStrategy, SourceRef,
};
use selfheal_scenario::Scenario;

fn scenario() -> (tempfile::TempDir, Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = selfheal_scenario::build(
        &common::examples_dir().join("payment-service"),
        &dir.path().join("repo"),
    )
    .unwrap();
    (dir, scenario)
}

fn request(scenario: &Scenario) -> GenerateCandidatesRequest {
    GenerateCandidatesRequest {
        incident_id: "inc-demo".into(),
        service: scenario.service.clone(),
        source: Some(SourceRef {
            repository: scenario.repo.display().to_string(),
            commit: scenario.bad_commit.clone(),
        }),
        location: Some(CodeLocation {
            file: scenario.bug_file.display().to_string(),
            line: scenario.bug_line,
            ..Default::default()
        }),
        culprit: Some(Commit {
            sha: scenario.bad_commit.clone(),
            ..Default::default()
        }),
        failure_message: "called `Option::unwrap()` on a `None` value".into(),
        cause_kind: CauseKind::CodeDefect.into(),
        ..Default::default()
    }
}

/// A request against a fixture repository.
fn fixture_request(
    repo: &std::path::Path,
    commit: &str,
    file: &str,
    (line, end_line): (u32, u32),
    culprit: Option<&str>,
    message: &str,
) -> GenerateCandidatesRequest {
    GenerateCandidatesRequest {
        service: "fixture".into(),
        source: Some(SourceRef {
            repository: repo.display().to_string(),
            commit: commit.into(),
        }),
        location: Some(CodeLocation {
            file: file.into(),
            line,
            end_line,
            ..Default::default()
        }),
        culprit: culprit.map(|sha| Commit {
            sha: sha.into(),
            ..Default::default()
        }),
        failure_message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_demo_bug_gets_template_partial_revert_and_full_revert_candidates_that_apply() {
    let (_dir, scenario) = scenario();
    let (service, mut client) = patcher(Default::default()).await;
    let response = client
        .generate_candidates(request(&scenario))
        .await
        .unwrap()
        .into_inner();
    let candidates = response.candidates;
    let strategies: Vec<_> = candidates.iter().map(|c| c.strategy()).collect();
    assert!(candidates.len() >= 3, "{strategies:?}");
    for wanted in [PatchStrategy::Template, PatchStrategy::PartialRevert] {
        assert!(
            strategies.contains(&wanted),
            "{wanted:?} in {strategies:?} (notes: {:?})",
            response.notes
        );
    }
    // The culprit commit has one hunk, so its full revert is the partial revert: kept once, and
    // said so.
    assert!(
        strategies.contains(&PatchStrategy::FullRevert)
            || response
                .notes
                .iter()
                .any(|note| note.starts_with("full_revert") && note.contains("identical")),
        "{:?}",
        response.notes
    );
    let best = &candidates[0];
    assert_eq!(
        best.strategy(),
        PatchStrategy::Template,
        "the template ranks first"
    );
    assert_eq!(best.template, "rust.option_unwrap.unwrap_or");
    assert!(
        best.diff.contains("unwrap_or(DEFAULT_METHOD)"),
        "{}",
        best.diff
    );
    let templates: Vec<&str> = candidates.iter().map(|c| c.template.as_str()).collect();
    assert!(
        templates.contains(&"rust.option_unwrap.unwrap_or_default")
            && templates.contains(&"rust.option_unwrap.early_error"),
        "{templates:?}"
    );
    for candidate in &candidates {
        applies(&scenario.repo, &scenario.bad_commit, &candidate.diff)
            .unwrap_or_else(|e| panic!("{e}\n{}", candidate.diff));
        assert!(!candidate.rationale.is_empty() && candidate.confidence > 0.0);
        assert!(candidate.confidence <= 1.0);
    }
    assert!(
        candidates
            .windows(2)
            .all(|pair| pair[0].confidence >= pair[1].confidence),
        "ordered by confidence"
    );
    let revert = candidates
        .iter()
        .find(|c| c.strategy() == PatchStrategy::PartialRevert)
        .unwrap();
    assert!(
        revert.rationale.contains("drops"),
        "the revert says it drops what the change added: {}",
        revert.rationale
    );
    assert!(
        !strategies.contains(&PatchStrategy::Mutation),
        "no mutations when a crash template matched"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_function_range_is_explored_from_the_culprits_code_line() {
    let (_dir, scenario) = scenario();
    let file = scenario.bug_file.display().to_string();
    let source = common::git(
        &scenario.repo,
        &["show", &format!("{}:{file}", scenario.bad_commit)],
    );
    let lines: Vec<&str> = source.lines().collect();
    let bug = scenario.bug_line as usize;
    let start = lines[..bug]
        .iter()
        .rposition(|l| l.starts_with("pub fn process_payment("))
        .unwrap() as u32
        + 1;
    let end = (lines[bug..].iter().position(|l| *l == "}").unwrap() + bug + 1) as u32;
    let mut range = request(&scenario);
    let location = range.location.as_mut().unwrap();
    (location.line, location.end_line) = (start, end);
    let (service, mut client) = patcher(Default::default()).await;
    let response = client
        .generate_candidates(range)
        .await
        .unwrap()
        .into_inner();
    service.stop().await.unwrap();
    let best = &response.candidates[0];
    assert_eq!(
        best.template, "rust.option_unwrap.unwrap_or",
        "{:?}",
        response.candidates
    );
    assert!(
        (best.confidence - 0.9).abs() < 1e-9 && !best.rationale.contains("suspicion rank"),
        "the culprit's code line comes first, ahead of its comment lines: {} {}",
        best.confidence,
        best.rationale
    );
    assert!(
        !response.notes.iter().any(|n| n.starts_with("template")),
        "{:?}",
        response.notes
    );
    for candidate in &response.candidates {
        applies(&scenario.repo, &scenario.bad_commit, &candidate.diff)
            .unwrap_or_else(|e| panic!("{e}\n{}", candidate.diff));
    }
}

#[tokio::test]
async fn past_fixes_raise_the_strategy_that_worked_and_the_rationale_says_so() {
    let (_dir, scenario) = scenario();
    let (service, mut client) = patcher(Default::default()).await;
    let plain = client
        .generate_candidates(request(&scenario))
        .await
        .unwrap()
        .into_inner();
    let mut with_history = request(&scenario);
    with_history.past_fixes = vec![
        PastFix {
            incident_id: "inc-earlier".into(),
            service: scenario.service.clone(),
            cause_kind: CauseKind::CodeDefect.into(),
            strategy: "partial_revert".into(),
            commit: "0123456789".into(),
            ..Default::default()
        },
        PastFix {
            incident_id: "inc-elsewhere".into(),
            service: "inventory-service".into(),
            cause_kind: CauseKind::CodeDefect.into(),
            strategy: "template".into(),
            template: "rust.option_unwrap.unwrap_or_default".into(),
            ..Default::default()
        },
    ];
    let raised = client
        .generate_candidates(with_history)
        .await
        .unwrap()
        .into_inner();
    let find = |list: &[selfheal_proto::v1::CandidatePatch],
                pick: &dyn Fn(&selfheal_proto::v1::CandidatePatch) -> bool| {
        list.iter().find(|c| pick(c)).cloned().unwrap()
    };
    let is_revert =
        |c: &selfheal_proto::v1::CandidatePatch| c.strategy() == PatchStrategy::PartialRevert;
    let is_default = |c: &selfheal_proto::v1::CandidatePatch| {
        c.template == "rust.option_unwrap.unwrap_or_default"
    };
    let before = find(&plain.candidates, &is_revert);
    let after = find(&raised.candidates, &is_revert);
    assert!(
        after.confidence > before.confidence,
        "{} > {}",
        after.confidence,
        before.confidence
    );
    assert!(
        after.rationale.contains("raised by past fixes") && after.rationale.contains("inc-earlier"),
        "{}",
        after.rationale
    );
    let before = find(&plain.candidates, &is_default);
    let after = find(&raised.candidates, &is_default);
    assert!(after.confidence > before.confidence);
    assert!(
        after.rationale.contains("same cause kind"),
        "{}",
        after.rationale
    );
    let untouched = find(&raised.candidates, &|c| {
        c.template == "rust.option_unwrap.unwrap_or"
    });
    assert!(
        !untouched.rationale.contains("past fixes"),
        "{}",
        untouched.rationale
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn max_candidates_and_exclude_are_honoured() {
    let (_dir, scenario) = scenario();
    let (service, mut client) = patcher(Default::default()).await;
    let mut one = request(&scenario);
    one.max_candidates = 1;
    let response = client.generate_candidates(one).await.unwrap().into_inner();
    assert_eq!(response.candidates.len(), 1);
    assert!(
        response
            .notes
            .iter()
            .any(|n| n.contains("kept the 1 most confident"))
    );

    let mut no_templates = request(&scenario);
    no_templates.exclude = vec![
        PatchStrategy::Template.into(),
        PatchStrategy::Mutation.into(),
    ];
    let response = client
        .generate_candidates(no_templates)
        .await
        .unwrap()
        .into_inner();
    assert!(!response.candidates.is_empty());
    assert!(
        response
            .candidates
            .iter()
            .all(|c| c.strategy() != PatchStrategy::Template
                && c.strategy() != PatchStrategy::Mutation),
        "{:?}",
        response.candidates
    );
    service.stop().await.unwrap();
}

const RATES_GOOD: &str = "pub const DEFAULT_RATE: u32 = 100;\n\npub fn rate(rates: &[u32], tier: usize) -> u32 {\n    let rate = rates[0];\n    rate\n}\n\npub fn total(amount: u32, fee: u32) -> u32 {\n    let total = amount;\n    total\n}\n";
const RATES_BAD: &str = "pub const DEFAULT_RATE: u32 = 100;\n\npub fn rate(rates: &[u32], tier: usize) -> u32 {\n    let rate = rates[tier];\n    rate\n}\n\npub fn total(amount: u32, fee: u32) -> u32 {\n    let total = amount + fee;\n    total\n}\n";

#[tokio::test]
async fn index_and_overflow_panics_get_checked_rewrites_that_apply() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let ids = repository(
        &repo,
        &[
            ("rates", &[("src/lib.rs", RATES_GOOD)]),
            ("per-tier rates and fees", &[("src/lib.rs", RATES_BAD)]),
        ],
    );
    let (service, mut client) = patcher(Default::default()).await;

    let index = client
        .generate_candidates(fixture_request(
            &repo,
            &ids[1],
            "src/lib.rs",
            (4, 0),
            Some(&ids[1]),
            "index out of bounds: the len is 3 but the index is 3",
        ))
        .await
        .unwrap()
        .into_inner();
    let best = &index.candidates[0];
    assert_eq!(best.template, "rust.index.get_or", "{:?}", index.candidates);
    assert!(
        best.diff
            .contains("+    let rate = rates.get(tier).cloned().unwrap_or(DEFAULT_RATE);"),
        "{}",
        best.diff
    );
    assert!(
        index
            .candidates
            .iter()
            .any(|c| c.template == "rust.index.get_or_default")
    );

    let overflow = client
        .generate_candidates(fixture_request(
            &repo,
            &ids[1],
            "src/lib.rs",
            (9, 0),
            None,
            "attempt to add with overflow",
        ))
        .await
        .unwrap()
        .into_inner();
    let best = &overflow.candidates[0];
    assert_eq!(best.template, "rust.overflow.saturating");
    assert!(
        best.diff
            .contains("+    let total = amount.saturating_add(fee);"),
        "{}",
        best.diff
    );
    assert!(
        overflow.notes.iter().any(|n| n.contains("no culprit")),
        "{:?}",
        overflow.notes
    );
    for candidate in index.candidates.iter().chain(&overflow.candidates) {
        applies(&repo, &ids[1], &candidate.diff)
            .unwrap_or_else(|e| panic!("{e}\n{}", candidate.diff));
    }
    service.stop().await.unwrap();
}

const LIMITS_GOOD: &str = "MAX_BATCH = 10\n\n\ndef accept(batch):\n    \"\"\"Whether a batch may be processed.\"\"\"\n    size = len(batch)\n    if size <= MAX_BATCH:\n        return True\n    return False\n";
const LIMITS_BAD: &str = "MAX_BATCH = 10\n\n\ndef accept(batch):\n    \"\"\"Whether a batch may be processed.\"\"\"\n    size = len(batch)\n    if size < MAX_BATCH:\n        return True\n    return False\n";

#[tokio::test]
async fn a_range_without_a_crash_template_gets_mutations_culprit_lines_first() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let ids = repository(
        &repo,
        &[
            ("batches", &[("app/limits.py", LIMITS_GOOD)]),
            ("tighten the batch check", &[("app/limits.py", LIMITS_BAD)]),
        ],
    );
    let (service, mut client) = patcher(Default::default()).await;
    // Only the failing test is known: the whole function is the location.
    let mut request = fixture_request(
        &repo,
        &ids[1],
        "app/limits.py",
        (4, 9),
        Some(&ids[1]),
        "AssertionError: False is not true : a batch of exactly MAX_BATCH is accepted",
    );
    request.max_candidates = 30;
    let response = client
        .generate_candidates(request)
        .await
        .unwrap()
        .into_inner();
    let mutations: Vec<_> = response
        .candidates
        .iter()
        .filter(|c| c.strategy() == PatchStrategy::Mutation)
        .collect();
    assert!(!mutations.is_empty(), "{:?}", response.notes);
    let best_mutation = mutations[0];
    assert!(
        best_mutation.diff.contains("-    if size < MAX_BATCH:"),
        "the culprit's line is mutated first: {}",
        best_mutation.diff
    );
    assert!(
        mutations
            .iter()
            .any(|m| m.diff.contains("+    if not (size < MAX_BATCH):")),
        "negation offered"
    );
    let revert = response
        .candidates
        .iter()
        .find(|c| c.strategy() == PatchStrategy::PartialRevert)
        .expect("the culprit's hunk is in the range");
    assert!(
        revert.diff.contains("+    if size <= MAX_BATCH:"),
        "{}",
        revert.diff
    );
    assert!(revert.confidence > best_mutation.confidence);
    assert!(
        mutations.iter().all(|m| m.confidence < 0.35),
        "mutations rank low"
    );
    for candidate in &response.candidates {
        applies(&repo, &ids[1], &candidate.diff)
            .unwrap_or_else(|e| panic!("{e}\n{}", candidate.diff));
    }
    // The boundary mutation `<` → `<=` is the revert here: identical diffs are kept once.
    assert!(
        response
            .notes
            .iter()
            .any(|n| n.starts_with("mutation") && n.contains("identical")),
        "{:?}",
        response.notes
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_or_malformed_requests_are_rejected_with_the_reason() {
    let (_dir, scenario) = scenario();
    let (service, mut client) = patcher(Default::default()).await;
    let mut client2 = client.clone();
    let mut refused = async |mutate: &dyn Fn(&mut GenerateCandidatesRequest)| {
        let mut req = request(&scenario);
        mutate(&mut req);
        client2.generate_candidates(req).await.unwrap_err()
    };

    let status = refused(&|r| r.location.as_mut().unwrap().file = "../../etc/passwd".into()).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("stay inside"),
        "{}",
        status.message()
    );

    let status = refused(&|r| r.location.as_mut().unwrap().file = "/etc/passwd".into()).await;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );

    let status = refused(&|r| r.location = None).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("missing field location"),
        "{}",
        status.message()
    );

    let status = refused(&|r| r.source = None).await;
    assert!(
        status.message().contains("missing field source"),
        "{}",
        status.message()
    );

    let status = refused(&|r| {
        r.source.as_mut().unwrap().commit = "0123456789abcdef0123456789abcdef01234567".into()
    })
    .await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
    assert!(
        status.message().contains("0123456789abcdef"),
        "{}",
        status.message()
    );

    let status = refused(&|r| {
        r.culprit.as_mut().unwrap().sha = "fedcba9876543210fedcba9876543210fedcba98".into()
    })
    .await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());

    let status = refused(&|r| r.location.as_mut().unwrap().file = "src/missing.rs".into()).await;
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("src/missing.rs"),
        "{}",
        status.message()
    );

    let status =
        refused(&|r| r.source.as_mut().unwrap().repository = "/nonexistent/repo".into()).await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());

    let status = refused(&|r| r.source.as_mut().unwrap().commit = "--output=/tmp/x".into()).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let status = refused(&|r| r.trace_text = "frame\n".repeat(400_000)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("trace_text is 2400000 bytes"),
        "{}",
        status.message()
    );

    let status = refused(&|r| r.location.as_mut().unwrap().end_line = 3).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("end_line"),
        "{}",
        status.message()
    );

    let status = refused(&|r| r.location.as_mut().unwrap().line = 100_000).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("past the end"),
        "{}",
        status.message()
    );

    // A valid request still works after all that.
    let ok = client
        .generate_candidates(request(&scenario))
        .await
        .unwrap();
    assert!(!ok.into_inner().candidates.is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn the_template_fix_makes_the_target_build_and_pass_its_tests() {
    let (_dir, scenario) = scenario();
    let fix = selfheal_patcher::strategy::FixRequest {
        repository: scenario.repo.clone(),
        commit: scenario.bad_commit.clone(),
        file: scenario.bug_file.display().to_string(),
        line: scenario.bug_line,
        culprit: Some(scenario.bad_commit.clone()),
        failure_message: "called `Option::unwrap()` on a `None` value".into(),
        max_candidates: 8,
        ..Default::default()
    };
    let found = selfheal_patcher::strategy::Patcher::new(std::time::Duration::from_secs(20))
        .generate(&fix)
        .await
        .unwrap();
    let best = &found.candidates[0];
    let worktree = common::Worktree::new(&scenario.repo, &scenario.bad_commit);
    worktree.apply(&best.diff, false).unwrap();
    let status = std::process::Command::new("cargo")
        .args(["test", "--locked", "--quiet"])
        .current_dir(&worktree.path)
        // A target directory of its own: builds of other commits of the same example (the gate's,
        // other tests') write the same binary names and could replace ours between build and run.
        .env(
            "CARGO_TARGET_DIR",
            selfheal_scenario::example_target_dir().join("patcher-template-fix"),
        )
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the patched payment-service passes its own tests"
    );
}
