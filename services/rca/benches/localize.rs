//! Localisation latency on the demo repository: the payment service's panic with a backtrace,
//! parsed, resolved in the tree of the deployed commit, read, blamed and ranged with git.

use criterion::{Criterion, criterion_group, criterion_main};
use selfheal_rca::localize::{LocalizeQuery, Localizer};

fn localize_demo_panic(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = selfheal_scenario::examples_dir().join("payment-service");
    let scenario = selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let localizer = Localizer::default();
    let query = LocalizeQuery {
        service: scenario.service.clone(),
        trace_text: demo_trace(),
        repository: scenario.repo.to_string_lossy().into_owned(),
        commit: scenario.bad_commit.clone(),
        last_good_commit: Some(scenario.good_commit.clone()),
    };
    let check = runtime
        .block_on(localizer.localize(query.clone()))
        .expect("the demo panic localises");
    assert_eq!(check.culprit.sha, scenario.bad_commit);

    c.bench_function("localize_demo_panic", |b| {
        b.iter(|| runtime.block_on(localizer.localize(query.clone())))
    });
}

/// The shape of the demo build's panic with `RUST_BACKTRACE=1`, std and tokio frames included.
fn demo_trace() -> String {
    let std_frame = |n: u32, function: &str, file: &str| {
        format!(
            "  {n}: {function}\n             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/{file}\n"
        )
    };
    let mut text = String::from(
        "thread 'tokio-rt-worker' (15641) panicked at src/payments.rs:237:44:\ncalled `Option::unwrap()` on a `None` value\nstack backtrace:\n",
    );
    text.push_str(&std_frame(
        0,
        "__rustc::rust_begin_unwind",
        "std/src/panicking.rs:689:5",
    ));
    text.push_str(&std_frame(
        1,
        "core::panicking::panic_fmt",
        "core/src/panicking.rs:80:14",
    ));
    text.push_str(&std_frame(
        2,
        "core::panicking::panic",
        "core/src/panicking.rs:150:5",
    ));
    text.push_str(&std_frame(
        3,
        "core::option::unwrap_failed",
        "core/src/option.rs:2236:5",
    ));
    text.push_str("  12: payment_service::payments::process_payment\n             at ./src/payments.rs:237:44\n");
    text.push_str("  13: tokio::runtime::task::core::Core<T,S>::poll\n             at /home/builder/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.47.1/src/runtime/task/core.rs:375:24\n");
    text.push_str(
        "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n",
    );
    text
}

criterion_group!(benches, localize_demo_panic);
criterion_main!(benches);
