//! Builds the named scenario variants and checks their histories and the variant lookup.

use std::path::{Path, PathBuf};
use std::process::Command;

use selfheal_scenario::{
    DEFAULT_VARIANT, ScenarioError, build, build_variant, examples_dir, variants,
};

fn payment() -> PathBuf {
    examples_dir().join("payment-service")
}

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
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

/// The bug line's text at `commit`.
fn line_at(repo: &Path, commit: &str, file: &Path, line: u32) -> Option<String> {
    let spec = format!("{commit}:{}", file.display());
    let output = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["show", &spec])
        .output()
        .expect("git runs");
    let text = String::from_utf8(output.stdout).ok()?;
    text.lines().nth(line as usize - 1).map(str::to_owned)
}

#[test]
fn lists_the_variants_of_each_example() {
    assert_eq!(
        variants(&payment()).unwrap(),
        ["instalments", "leak", "loop", "scenario"]
    );
    assert_eq!(
        variants(&examples_dir().join("chain-service")).unwrap(),
        ["scenario"]
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(variants(dir.path()).unwrap().is_empty());
}

#[test]
fn the_default_variant_is_the_scenario_file() {
    let dir = tempfile::tempdir().unwrap();
    let plain = build(&payment(), &dir.path().join("a")).unwrap();
    let named = build_variant(&payment(), DEFAULT_VARIANT, &dir.path().join("b")).unwrap();
    assert_eq!(plain.commits, named.commits);
    assert_eq!(plain.bad_commit, named.bad_commit);
    assert_eq!(plain.bug_line, named.bug_line);
}

#[test]
fn variants_share_the_good_history_and_differ_in_the_bug() {
    let dir = tempfile::tempdir().unwrap();
    let plain = build(&payment(), &dir.path().join("plain")).unwrap();
    for (variant, file, marker, message) in [
        (
            "leak",
            "src/audit.rs",
            "journal.push(record)",
            "journal accepted payments for the audit export",
        ),
        (
            "loop",
            "src/review.rs",
            "while is_held(customer_id)",
            "hold payments of accounts under fraud review",
        ),
    ] {
        let scenario = build_variant(&payment(), variant, &dir.path().join(variant)).unwrap();
        assert_eq!(scenario.service, "payment-service");
        assert_eq!(scenario.commits.len(), 3, "{variant}");
        assert_eq!(scenario.good_commit, plain.good_commit, "{variant}");
        assert_ne!(scenario.bad_commit, plain.bad_commit, "{variant}");
        assert_eq!(scenario.commits[2].message, message);
        assert_eq!(scenario.bug_file, Path::new(file));

        let bad = line_at(
            &scenario.repo,
            &scenario.bad_commit,
            &scenario.bug_file,
            scenario.bug_line,
        )
        .expect("the bug line exists at the bad commit");
        assert!(bad.contains(marker), "{variant}: {bad}");
        assert!(
            line_at(
                &scenario.repo,
                &scenario.good_commit,
                &scenario.bug_file,
                scenario.bug_line
            )
            .is_none(),
            "{variant}: the bug file exists before the bug"
        );
        let status = git(&scenario.repo, &["status", "--porcelain"]);
        assert!(status.is_empty(), "{variant}: dirty work tree\n{status}");
    }
}

#[test]
fn instalments_adds_a_latent_fault_under_the_demos_own_bug() {
    let dir = tempfile::tempdir().unwrap();
    let plain = build(&payment(), &dir.path().join("plain")).unwrap();
    let scenario = build_variant(&payment(), "instalments", &dir.path().join("v")).unwrap();
    let messages: Vec<&str> = scenario
        .commits
        .iter()
        .map(|c| c.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "initial payment service",
            "reject payments above the single-payment limit",
            "offer instalments on large payments",
            "use the customer's preferred payment method",
        ]
    );
    assert_eq!(scenario.commits[1].sha, plain.commits[1].sha);
    assert_eq!(scenario.good_commit, scenario.commits[2].sha);
    assert_eq!(scenario.bad_commit, scenario.commits[3].sha);
    assert_eq!(
        (scenario.bug_file.as_path(), scenario.bug_line),
        (plain.bug_file.as_path(), plain.bug_line)
    );
    assert_eq!(
        line_at(
            &scenario.repo,
            &scenario.bad_commit,
            &scenario.bug_file,
            scenario.bug_line
        ),
        line_at(
            &plain.repo,
            &plain.bad_commit,
            &plain.bug_file,
            plain.bug_line
        ),
        "the same bug line"
    );
    for commit in [&scenario.good_commit, &scenario.bad_commit] {
        let latent = line_at(&scenario.repo, commit, Path::new("src/instalments.rs"), 21)
            .expect("the latent fault is there before and at the bug");
        assert!(latent.contains("plan.unwrap()"), "{latent}");
    }
}

#[test]
fn an_unknown_variant_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("repo");
    for name in ["crash", "../scenario", "", "leak.toml"] {
        let err = build_variant(&payment(), name, &dest).unwrap_err();
        let ScenarioError::UnknownVariant {
            variant, available, ..
        } = &err
        else {
            panic!("{name:?}: {err:?}");
        };
        assert_eq!(variant, name);
        assert_eq!(available, &["instalments", "leak", "loop", "scenario"]);
        let message = err.to_string();
        assert!(
            message.contains("available: instalments, leak, loop, scenario"),
            "{message}"
        );
    }
    assert!(!dest.exists(), "an unknown variant must not touch dest");
}

#[test]
fn a_variant_with_a_drifted_marker_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("example");
    copy_tree(&payment(), &copy);
    let file = copy.join("scenario/leak.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("journal.push(", "journal.drain(")).unwrap();
    let err = build_variant(&copy, "leak", &dir.path().join("repo")).unwrap_err();
    assert!(matches!(err, ScenarioError::BugLocation { .. }), "{err:?}");
    assert!(err.to_string().contains("journal.drain("), "{err}");
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
