//! Builds the payment-service scenario and checks the history it produces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use selfheal_scenario::{Scenario, ScenarioError, build, examples_dir};

fn example() -> PathBuf {
    examples_dir().join("payment-service")
}

fn build_in(dir: &tempfile::TempDir) -> Scenario {
    build(&example(), &dir.path().join("repo")).expect("the scenario builds")
}

/// Runs git in `repo` without the user's configuration and returns stdout; panics on failure.
fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("git output is utf-8")
}

#[test]
fn builds_are_reproducible() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build_in(&a);
    let second = build_in(&b);
    assert_ne!(first.repo, second.repo);
    assert_eq!(first.commits, second.commits);
    assert_eq!(first.good_commit, second.good_commit);
    assert_eq!(first.bad_commit, second.bad_commit);
    assert_eq!(first.commits.len(), 3);
    assert!(first.commits.iter().all(|c| c.sha.len() == 40));
    assert_eq!(first.good_commit, first.commits[1].sha);
    assert_eq!(first.bad_commit, first.commits[2].sha);
    assert_eq!(first.service, "payment-service");
    assert_eq!(first.bug_file, Path::new("src/payments.rs"));
}

#[test]
fn log_has_the_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = build_in(&dir);
    let log = git(
        &scenario.repo,
        &["log", "--reverse", "--format=%H %s", "main"],
    );
    let lines: Vec<&str> = log.lines().collect();
    let expected = [
        "initial payment service",
        "reject payments above the single-payment limit",
        "use the customer's preferred payment method",
    ];
    assert_eq!(lines.len(), expected.len(), "{log}");
    for ((line, message), commit) in lines.iter().zip(expected).zip(&scenario.commits) {
        assert_eq!(*line, format!("{} {message}", commit.sha));
        assert_eq!(commit.message, message);
    }
    assert_eq!(
        git(&scenario.repo, &["rev-parse", "HEAD"]).trim(),
        scenario.bad_commit
    );
    let status = git(&scenario.repo, &["status", "--porcelain"]);
    assert!(status.is_empty(), "work tree is not clean:\n{status}");
}

#[test]
fn snapshot_leaves_out_scenario_data_and_normalises_modes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = build_in(&dir);
    let tree = git(&scenario.repo, &["ls-tree", "-r", &scenario.commits[0].sha]);
    let paths: Vec<&str> = tree.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    for required in [
        "Cargo.toml",
        "Cargo.lock",
        "selfheal.toml",
        "src/payments.rs",
    ] {
        assert!(paths.contains(&required), "{required} missing from\n{tree}");
    }
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("scenario/") && !p.starts_with("target/"))
    );
    assert!(
        tree.lines().all(|l| l.starts_with("100644 blob ")),
        "{tree}"
    );
}

#[test]
fn bug_line_holds_the_unwrap_in_the_bad_commit_only() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = build_in(&dir);
    let line_at = |commit: &str| {
        let spec = format!("{commit}:{}", scenario.bug_file.display());
        let contents = git(&scenario.repo, &["show", &spec]);
        contents
            .lines()
            .nth(scenario.bug_line as usize - 1)
            .expect("bug_line is inside the file")
            .to_owned()
    };
    let bad = line_at(&scenario.bad_commit);
    assert!(bad.contains("preferred_method.unwrap()"), "{bad}");
    let good = line_at(&scenario.good_commit);
    assert!(!good.contains(".unwrap()"), "{good}");
    assert!(good.contains("DEFAULT_METHOD"), "{good}");
}

#[test]
fn blame_attributes_the_bug_line_to_the_bad_commit() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = build_in(&dir);
    let range = format!("{0},{0}", scenario.bug_line);
    let file = scenario.bug_file.to_string_lossy().into_owned();
    let blame = git(
        &scenario.repo,
        &["blame", "--porcelain", "-L", &range, "--", &file],
    );
    let sha = blame.split_whitespace().next().unwrap();
    assert_eq!(sha, scenario.bad_commit);
    assert!(blame.contains("summary use the customer's preferred payment method"));
}

#[test]
fn refuses_a_non_empty_destination() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leftover"), "x").unwrap();
    let err = build(&example(), dir.path()).unwrap_err();
    assert!(
        matches!(err, ScenarioError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("exists and is not an empty directory"),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(dir.path().join("leftover").exists());
    assert!(!dir.path().join(".git").exists());
}

#[test]
fn accepts_an_existing_empty_destination() {
    let dir = tempfile::tempdir().unwrap();
    let scenario =
        build(&example(), dir.path()).expect("an empty directory is a valid destination");
    assert!(scenario.repo.is_absolute());
    assert!(scenario.repo.join(".git").is_dir());
}

#[test]
fn drifted_bug_line_fails_loudly() {
    // A copy of the example whose scenario points one line above the real bug.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("example");
    copy_tree(&example(), &copy);
    let scenario_file = copy.join("scenario/scenario.toml");
    let text = std::fs::read_to_string(&scenario_file).unwrap();
    let line: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("bug_line = "))
        .and_then(|n| n.trim().parse().ok())
        .expect("scenario.toml has bug_line");
    let drifted = text.replace(
        &format!("bug_line = {line}"),
        &format!("bug_line = {}", line - 1),
    );
    std::fs::write(&scenario_file, drifted).unwrap();

    let err = build(&copy, &dir.path().join("repo")).unwrap_err();
    assert!(matches!(err, ScenarioError::BugLocation { .. }), "{err:?}");
    assert!(err.to_string().contains(".unwrap()"), "{err}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn example_target_dir() -> PathBuf {
    selfheal_scenario::example_target_dir()
}

fn cargo_test(repo: &Path) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", example_target_dir())
        .args(["test", "--locked", "--no-fail-fast"])
        .output()
        .expect("cargo runs")
}

/// Builds and tests the example at both ends of the bug; takes about a minute on a cold cache.
#[test]
fn good_commit_passes_its_tests_and_bad_commit_fails_them() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = build_in(&dir);

    git(
        &scenario.repo,
        &["checkout", "--quiet", &scenario.good_commit],
    );
    let good = cargo_test(&scenario.repo);
    assert!(
        good.status.success(),
        "tests fail at the good commit:\n{}\n{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );

    git(
        &scenario.repo,
        &["checkout", "--quiet", &scenario.bad_commit],
    );
    let bad = cargo_test(&scenario.repo);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "tests pass at the bad commit:\n{stdout}"
    );
    assert!(
        stdout.contains("pays_for_a_customer_without_a_preferred_method ... FAILED"),
        "the None-customer test did not fail:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("pays_for_a_customer_with_a_preferred_method ... ok"),
        "{stdout}"
    );
    let location = format!(
        "panicked at {}:{}:",
        scenario.bug_file.display(),
        scenario.bug_line
    );
    assert!(
        stdout.contains(&location) || stderr.contains(&location),
        "no panic at {location}:\n{stdout}\n{stderr}"
    );
}
