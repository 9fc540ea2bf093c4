//! Candidates for the demo bug, on the real scenario repository, over real gRPC.

use selfheal_proto::v1::patcher_client::PatcherClient;
use selfheal_proto::v1::{
    CodeLocation, Commit, GenerateCandidatesRequest, PatchStrategy, SourceRef,
};
use selfheal_scenario::Scenario;
use selfheal_service::testkit::{ServiceUnderTest, channel};

fn scenario() -> (tempfile::TempDir, Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = selfheal_scenario::build(
        &selfheal_scenario::examples_dir().join("payment-service"),
        &dir.path().join("repo"),
    )
    .unwrap();
    (dir, scenario)
}

fn request(scenario: &Scenario) -> GenerateCandidatesRequest {
    GenerateCandidatesRequest {
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
        ..Default::default()
    }
}

fn git_apply_check(repo: &std::path::Path, commit: &str, diff: &str) -> bool {
    let worktree = tempfile::tempdir().unwrap();
    let path = worktree.path().join("wt");
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["worktree", "add", "--detach", "--quiet"])
        .arg(&path)
        .arg(commit)
        .status()
        .unwrap();
    assert!(status.success());
    let patch = worktree.path().join("fix.diff");
    std::fs::write(&patch, diff).unwrap();
    let applied = std::process::Command::new("git")
        .arg("-C")
        .arg(&path)
        .arg("apply")
        .arg("--check")
        .arg(&patch)
        .status()
        .unwrap();
    applied.success()
}

#[tokio::test]
async fn the_demo_bug_gets_template_partial_revert_and_full_revert_candidates_that_apply() {
    let (_dir, scenario) = scenario();
    let service =
        ServiceUnderTest::start(|l, s| selfheal_patcher::run(Default::default(), l, s)).await;
    let mut client = PatcherClient::new(channel(service.grpc_addr).await.unwrap());
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
    // The culprit commit has one hunk, so its full revert is the partial revert: kept once, and said so.
    assert!(
        strategies.contains(&PatchStrategy::FullRevert)
            || response
                .notes
                .iter()
                .any(|note| note.starts_with("FullRevert") && note.contains("identical")),
        "{:?}",
        response.notes
    );
    let best = &candidates[0];
    assert_eq!(
        best.strategy(),
        PatchStrategy::Template,
        "the template ranks first"
    );
    assert!(
        best.diff.contains("unwrap_or(DEFAULT_METHOD)"),
        "{}",
        best.diff
    );
    for candidate in &candidates {
        assert!(
            git_apply_check(&scenario.repo, &scenario.bad_commit, &candidate.diff),
            "applies:\n{}",
            candidate.diff
        );
        assert!(!candidate.rationale.is_empty() && candidate.confidence > 0.0);
    }
    let revert = candidates
        .iter()
        .find(|c| c.strategy() == PatchStrategy::PartialRevert)
        .unwrap();
    assert!(
        revert.rationale.contains("drops"),
        "the revert says it drops what the change added: {}",
        revert.rationale
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_or_malformed_requests_are_rejected_with_the_reason() {
    let (_dir, scenario) = scenario();
    let service =
        ServiceUnderTest::start(|l, s| selfheal_patcher::run(Default::default(), l, s)).await;
    let mut client = PatcherClient::new(channel(service.grpc_addr).await.unwrap());

    let mut hostile = request(&scenario);
    hostile.location.as_mut().unwrap().file = "../../etc/passwd".into();
    let status = client.generate_candidates(hostile).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("stay inside"),
        "{}",
        status.message()
    );

    let mut absolute = request(&scenario);
    absolute.location.as_mut().unwrap().file = "/etc/passwd".into();
    assert_eq!(
        client
            .generate_candidates(absolute)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );

    let mut no_source = request(&scenario);
    no_source.source = None;
    let status = client.generate_candidates(no_source).await.unwrap_err();
    assert!(
        status.message().contains("missing field source"),
        "{}",
        status.message()
    );

    let mut unknown = request(&scenario);
    unknown.source.as_mut().unwrap().commit = "0123456789abcdef0123456789abcdef01234567".into();
    assert_eq!(
        client
            .generate_candidates(unknown)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::FailedPrecondition
    );

    let mut option_injection = request(&scenario);
    option_injection.source.as_mut().unwrap().commit = "--output=/tmp/x".into();
    assert_eq!(
        client
            .generate_candidates(option_injection)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
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
        exclude: vec![],
    };
    let found = selfheal_patcher::strategy::generate(&fix, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let best = &found.candidates[0];
    let patch = scenario.repo.join("fix.diff");
    std::fs::write(&patch, &best.diff).unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&scenario.repo)
            .args(args)
            .status()
            .unwrap()
    };
    assert!(git(&["checkout", "--quiet", &scenario.bad_commit]).success());
    assert!(git(&["apply", "fix.diff"]).success());
    let target_dir = selfheal_scenario::example_target_dir();
    let status = std::process::Command::new("cargo")
        .args(["test", "--locked", "--quiet"])
        .current_dir(&scenario.repo)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the patched payment-service passes its own tests"
    );
}
