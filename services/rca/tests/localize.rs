//! Localisation against real git repositories: the demo's payment-service history, and small
//! hostile repositories built here.

use std::path::Path;
use std::process::Command;

use selfheal_rca::localize::{Language, LocalizeError, LocalizeQuery, LocalizeSettings, Localizer};
use selfheal_scenario::Scenario;

fn demo() -> (tempfile::TempDir, Scenario) {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = selfheal_scenario::examples_dir().join("payment-service");
    let scenario = selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
    (dir, scenario)
}

/// The first line of the demo build's panic, as Rust 1.95 prints it.
const DEMO_PANIC: &str = "thread 'tokio-rt-worker' (15641) panicked at src/payments.rs:237:44:\ncalled `Option::unwrap()` on a `None` value\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";

/// The same panic with `RUST_BACKTRACE=1`: std, tokio and hyper frames around the service's own.
const DEMO_BACKTRACE: &str = "\
2026-11-30T04:12:01.331Z  INFO payment_service: listening on 127.0.0.1:8080
thread 'tokio-rt-worker' (15641) panicked at src/payments.rs:237:44:
called `Option::unwrap()` on a `None` value
stack backtrace:
   0: __rustc::rust_begin_unwind
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs:689:5
   1: core::panicking::panic_fmt
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/panicking.rs:80:14
   2: core::panicking::panic
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/panicking.rs:150:5
   3: core::option::unwrap_failed
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/option.rs:2236:5
  12: payment_service::payments::process_payment
             at ./src/payments.rs:237:44
  13: payment_service::pay::{{closure}}
             at ./src/lib.rs:88:22
  14: <axum::handler::HandlerService<H,T,S> as tower_service::Service<http::request::Request<B>>>::call::{{closure}}
             at /home/builder/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/axum-0.8.4/src/handler/service.rs:175:56
  15: tokio::runtime::task::core::Core<T,S>::poll
             at /home/builder/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.47.1/src/runtime/task/core.rs:375:24
  16: hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch
             at /home/builder/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-1.7.0/src/proto/h1/dispatch.rs:142:16
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.
";

fn query(scenario: &Scenario, trace: &str) -> LocalizeQuery {
    LocalizeQuery {
        service: scenario.service.clone(),
        trace_text: trace.to_owned(),
        repository: scenario.repo.to_string_lossy().into_owned(),
        commit: scenario.bad_commit.clone(),
        last_good_commit: Some(scenario.good_commit.clone()),
    }
}

#[tokio::test]
async fn demo_backtrace_localises_to_the_unwrap_and_its_commit() {
    let (_dir, scenario) = demo();
    let found = Localizer::default()
        .localize(query(&scenario, DEMO_BACKTRACE))
        .await
        .expect("localised");
    assert_eq!(found.language, Language::Rust);
    assert_eq!(found.message, "called `Option::unwrap()` on a `None` value");
    assert_eq!(found.location.file, "src/payments.rs");
    assert_eq!(found.location.file, scenario.bug_file.to_string_lossy());
    assert_eq!((found.location.line, found.location.column), (237, 44));
    assert_eq!(found.location.line, scenario.bug_line);
    assert_eq!(
        found.location.function,
        "payment_service::payments::process_payment"
    );
    assert!(found.location.function.ends_with("process_payment"));
    assert!(
        found
            .location
            .snippet
            .lines()
            .any(|line| line.starts_with("> 237 |") && line.contains(".unwrap()")),
        "{}",
        found.location.snippet
    );
    assert_eq!(found.location.snippet.lines().count(), 7);
    assert_eq!(found.culprit.sha, scenario.bad_commit);
    assert_eq!(
        found.culprit.message,
        scenario
            .commits
            .iter()
            .find(|c| c.sha == scenario.bad_commit)
            .map(|c| c.message.trim_end())
            .expect("bad commit")
    );
    assert!(found.culprit.files.iter().any(|f| f == "src/payments.rs"));
    assert!(!found.culprit.author.is_empty() && found.culprit.author_email.contains('@'));
    assert!(found.culprit.time > 0);
    assert!(found.culprit_in_range);
    let in_app: Vec<_> = found.frames.iter().filter(|f| f.in_app).collect();
    assert_eq!(
        in_app.len(),
        2,
        "process_payment and its caller: {in_app:#?}"
    );
}

#[tokio::test]
async fn demo_panic_without_backtrace_localises_from_the_panic_line() {
    let (_dir, scenario) = demo();
    let found = Localizer::default()
        .localize(query(&scenario, DEMO_PANIC))
        .await
        .expect("localised");
    assert_eq!(
        (found.location.file.as_str(), found.location.line),
        ("src/payments.rs", 237)
    );
    assert_eq!(found.culprit.sha, scenario.bad_commit);
    assert!(found.culprit_in_range);
}

#[tokio::test]
async fn culprit_is_out_of_range_when_the_last_good_commit_already_has_it() {
    let (_dir, scenario) = demo();
    let mut q = query(&scenario, DEMO_PANIC);
    q.last_good_commit = Some(scenario.bad_commit.clone());
    let found = Localizer::default()
        .localize(q.clone())
        .await
        .expect("localised");
    assert!(!found.culprit_in_range);
    q.last_good_commit = None;
    let found = Localizer::default().localize(q).await.expect("localised");
    assert!(
        !found.culprit_in_range,
        "no range without a last good commit"
    );
}

#[tokio::test]
async fn a_trace_that_does_not_match_the_commit_is_refused() {
    let (_dir, scenario) = demo();
    let trace = DEMO_PANIC.replace("237:44", "99999:1");
    let error = Localizer::default()
        .localize(query(&scenario, &trace))
        .await
        .expect_err("line past the end");
    assert!(
        matches!(error, LocalizeError::LineOutOfRange { line: 99999, .. }),
        "{error}"
    );
    let mut q = query(&scenario, DEMO_PANIC);
    q.commit = "0123456789012345678901234567890123456789".into();
    let error = Localizer::default()
        .localize(q)
        .await
        .expect_err("unknown commit");
    assert!(
        matches!(
            error,
            LocalizeError::CommitNotFound {
                field: "commit",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn hostile_revisions_and_repositories_are_refused() {
    let (_dir, scenario) = demo();
    let mut q = query(&scenario, DEMO_PANIC);
    q.commit = "--output=/tmp/owned".into();
    let error = Localizer::default().localize(q).await.expect_err("option");
    assert!(
        matches!(error, LocalizeError::InvalidRevision { .. }),
        "{error}"
    );
    let mut q = query(&scenario, DEMO_PANIC);
    q.repository = "relative/path".into();
    let error = Localizer::default()
        .localize(q)
        .await
        .expect_err("relative");
    assert!(
        matches!(error, LocalizeError::InvalidRepository { .. }),
        "{error}"
    );
    // A directory inside a repository is not that repository.
    let mut q = query(&scenario, DEMO_PANIC);
    q.repository = scenario.repo.join("src").to_string_lossy().into_owned();
    let error = Localizer::default()
        .localize(q)
        .await
        .expect_err("subdirectory");
    assert!(
        matches!(error, LocalizeError::RepositoryNotFound { .. }),
        "{error}"
    );
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A repository with one real file, a symlink to a file outside it, and a symlinked directory
/// pointing outside it; next to it a "secret" that must never be read.
fn hostile_repo() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_dir = dir.path().join("outside");
    std::fs::create_dir(&secret_dir).expect("outside dir");
    std::fs::write(secret_dir.join("secret.rs"), "SECRET\n".repeat(50)).expect("secret");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("repo");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(
        repo.join("src/lib.rs"),
        "fn a() {}\nfn b() {\n    panic!(\"x\");\n}\n",
    )
    .expect("file");
    std::os::unix::fs::symlink(secret_dir.join("secret.rs"), repo.join("src/leak.rs"))
        .expect("symlink");
    std::os::unix::fs::symlink(&secret_dir, repo.join("linked")).expect("dir symlink");
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "initial"]);
    let repo = repo.to_string_lossy().into_owned();
    let secret = secret_dir.to_string_lossy().into_owned();
    (dir, repo, secret)
}

fn rust_panic_at(file: &str, line: u32) -> String {
    format!("thread 'main' (1) panicked at {file}:{line}:5:\nboom\n")
}

async fn localize_in(
    repo: &str,
    trace: &str,
) -> Result<selfheal_rca::localize::Localization, LocalizeError> {
    Localizer::default()
        .localize(LocalizeQuery {
            service: "hostile".into(),
            trace_text: trace.to_owned(),
            repository: repo.to_owned(),
            commit: "HEAD".into(),
            last_good_commit: None,
        })
        .await
}

#[tokio::test]
async fn paths_outside_the_repository_are_never_read() {
    let (_dir, repo, secret) = hostile_repo();
    let hostile = [
        "../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        format!("{repo}/../outside/secret.rs"),
        format!("{secret}/secret.rs"),
        "src/leak.rs".to_owned(),
        format!("{repo}/src/leak.rs"),
        "linked/secret.rs".to_owned(),
        format!("{repo}/linked/secret.rs"),
    ];
    for path in &hostile {
        let error = localize_in(&repo, &rust_panic_at(path, 3))
            .await
            .expect_err(path);
        let LocalizeError::NoAppFrame { detail, .. } = &error else {
            panic!("{path}: unexpected {error}");
        };
        assert!(!detail.contains("SECRET"), "{detail}");
        assert!(!detail.contains("root:"), "{detail}");
    }
    // The same repository localises its own file.
    let found = localize_in(&repo, &rust_panic_at("src/lib.rs", 3))
        .await
        .expect("own file");
    assert!(found.location.snippet.contains("panic!"));
    assert!(!found.location.snippet.contains("SECRET"));
}

#[tokio::test]
async fn hostile_frames_are_not_in_app_next_to_a_real_one() {
    let (_dir, repo, _secret) = hostile_repo();
    let trace = "\
TypeError: boom
    at evil (/etc/passwd:1:1)
    at climb (../../etc/passwd:1:1)
    at link (src/leak.rs:1:1)
    at real (src/lib.rs:3:5)
";
    let found = localize_in(&repo, trace).await.expect("the real frame");
    assert_eq!(found.language, Language::Node);
    let verdicts: Vec<_> = found
        .frames
        .iter()
        .map(|f| (f.function.as_str(), f.in_app))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("evil", false),
            ("climb", false),
            ("link", false),
            ("real", true)
        ]
    );
    assert_eq!(found.location.file, "src/lib.rs");
}

#[tokio::test]
async fn garbled_truncated_and_oversized_traces_are_errors() {
    let (_dir, repo, _secret) = hostile_repo();
    for garbled in [
        "thread 'main' (1) panicked at",
        "Traceback (most recent call last):\n  File \"",
        "\u{0}\u{7f}\u{1b}[31m at at at (((:::",
        "goroutine 1 [running]:\n",
    ] {
        let error = localize_in(&repo, garbled).await.expect_err(garbled);
        assert!(
            matches!(error, LocalizeError::NoStackFrame),
            "{garbled:?}: {error}"
        );
    }
    let huge = rust_panic_at("src/lib.rs", 3).repeat(20 * 1024 * 1024 / 40);
    assert!(huge.len() >= 20 * 1024 * 1024);
    let error = localize_in(&repo, &huge).await.expect_err("too large");
    assert!(
        matches!(error, LocalizeError::TraceTooLarge { .. }),
        "{error}"
    );
    // Raised limits still parse 20 MB in bounded memory.
    let roomy = Localizer::new(LocalizeSettings {
        max_trace_bytes: 32 * 1024 * 1024,
        ..LocalizeSettings::default()
    });
    let found = roomy
        .localize(LocalizeQuery {
            service: "hostile".into(),
            trace_text: huge,
            repository: repo.clone(),
            commit: "HEAD".into(),
            last_good_commit: None,
        })
        .await
        .expect("localised");
    assert_eq!(found.location.line, 3);
}

/// A repository laid out like the corpus programs' sources (30 lines per file).
fn corpus_repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let files = [
        "src/stock.rs",
        "src/main.rs",
        "shop/pricing.py",
        "shop/orders.py",
        "main.py",
        "src/main/java/com/example/orders/Pricing.java",
        "internal/cart/cart.go",
        "main.go",
        "lib/cart.js",
        "app.js",
    ];
    for file in files {
        let path = repo.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        let body: String = (1..=30).map(|n| format!("line {n} of {file}\n")).collect();
        std::fs::write(path, body).expect("file");
    }
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "corpus sources"]);
    (dir, repo.to_string_lossy().into_owned())
}

#[tokio::test]
async fn corpus_traces_localise_to_repository_paths() {
    let (_dir, repo) = corpus_repo();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces");
    for (fixture, file, line) in [
        ("rust/panic_backtrace.txt", "src/stock.rs", 15),
        ("rust/panic_full_backtrace.txt", "src/stock.rs", 15),
        ("rust/panic_backtrace_from_root.txt", "src/stock.rs", 15),
        ("python/chained_during_handling.txt", "shop/pricing.py", 6),
        ("python/stdlib_frames.txt", "shop/pricing.py", 10),
        (
            "java/caused_by_chain.txt",
            "src/main/java/com/example/orders/Pricing.java",
            5,
        ),
        ("go/goroutine_sort_panic.txt", "internal/cart/cart.go", 22),
        ("go/nil_map_trimpath.txt", "internal/cart/cart.go", 11),
        ("node/esm_file_urls.txt", "lib/cart.js", 4),
    ] {
        let trace = std::fs::read_to_string(corpus.join(fixture)).expect("fixture");
        let found = localize_in(&repo, &trace).await.expect(fixture);
        assert_eq!(
            (found.location.file.as_str(), found.location.line),
            (file, line),
            "{fixture}"
        );
        assert_eq!(found.culprit.message, "corpus sources", "{fixture}");
    }
}
