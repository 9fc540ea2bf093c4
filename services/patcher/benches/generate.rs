//! Candidate generation latency on the demo repository (the payment service's bug commit): the
//! localised line (templates, partial and full revert), and the whole enclosing function as a
//! range location (blame ordering, templates over every line, hunks in the range).

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use selfheal_patcher::strategy::{FixRequest, Patcher};

fn generate_demo_candidates(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/payment-service");
    let scenario = selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let patcher = Patcher::new(Duration::from_secs(20));
    let line = FixRequest {
        service: scenario.service.clone(),
        repository: scenario.repo.clone(),
        commit: scenario.bad_commit.clone(),
        file: scenario.bug_file.display().to_string(),
        line: scenario.bug_line,
        culprit: Some(scenario.bad_commit.clone()),
        failure_message: "called `Option::unwrap()` on a `None` value".into(),
        max_candidates: 8,
        ..Default::default()
    };
    let source = std::fs::read_to_string(scenario.repo.join(&scenario.bug_file)).expect("source");
    let lines: Vec<&str> = source.lines().collect();
    let start = lines[..scenario.bug_line as usize]
        .iter()
        .rposition(|l| l.starts_with("pub fn "))
        .expect("the bug is in a function") as u32
        + 1;
    let end = lines[scenario.bug_line as usize..]
        .iter()
        .position(|l| *l == "}")
        .expect("the function ends") as u32
        + scenario.bug_line
        + 1;
    let range = FixRequest {
        line: start,
        end_line: Some(end),
        ..line.clone()
    };
    for request in [&line, &range] {
        let found = runtime
            .block_on(patcher.generate(request))
            .expect("the demo gets candidates");
        assert!(
            found.candidates[0]
                .diff
                .contains("unwrap_or(DEFAULT_METHOD)")
        );
    }

    c.bench_function("generate_demo_line", |b| {
        b.iter(|| runtime.block_on(patcher.generate(&line)))
    });
    c.bench_function("generate_demo_function_range", |b| {
        b.iter(|| runtime.block_on(patcher.generate(&range)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = generate_demo_candidates
}
criterion_main!(benches);
