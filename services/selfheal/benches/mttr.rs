//! MTTR of the demo over several runs: the whole loop on the embedded default, real builds,
//! tests and canary included. Prints the median and p90 of the MTTR and of every step.
//!
//! `cargo bench -p selfheal --bench mttr` (runs: `MTTR_BENCH_RUNS`, default 10). The first run
//! warms the build caches and is reported on its own.

use std::collections::BTreeMap;

use selfheal::demo::{DemoOptions, DemoSummary};

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(rank).copied().unwrap_or(f64::NAN)
}

async fn one_run(work: &std::path::Path) -> DemoSummary {
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let options = DemoOptions {
        work_dir: Some(work.to_path_buf()),
        ..Default::default()
    };
    let summary = selfheal::demo::run(options, sink)
        .await
        .unwrap_or_else(|error| panic!("the demo failed: {error}"));
    let _ = drain.await;
    assert!(summary.healed(), "the demo did not heal: {summary:?}");
    summary
}

fn main() {
    let runs: usize = std::env::var("MTTR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let work = tempfile::tempdir().expect("a work directory");
    runtime.block_on(async {
        let warm_up = one_run(work.path()).await;
        println!("warm-up run: MTTR {:.2} s", warm_up.mttr_seconds);
        let mut mttr = Vec::new();
        let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for run in 1..=runs {
            let summary = one_run(work.path()).await;
            println!(
                "run {run:>2}: MTTR {:.2} s, error rate {:.1}% → {:.2}%",
                summary.mttr_seconds,
                summary.error_rate_before * 100.0,
                summary.error_rate_after * 100.0
            );
            mttr.push(summary.mttr_seconds);
            for step in summary.steps {
                if !order.contains(&step.name) {
                    order.push(step.name.clone());
                }
                steps.entry(step.name).or_default().push(step.seconds);
            }
        }
        println!(
            "\nMTTR over {runs} runs: median {:.2} s, p90 {:.2} s",
            quantile(&mut mttr.clone(), 0.5),
            quantile(&mut mttr, 0.9)
        );
        println!("{:<12} {:>10} {:>10}", "step", "median s", "p90 s");
        for name in order {
            let values = steps.get_mut(&name).expect("recorded");
            println!(
                "{name:<12} {:>10.3} {:>10.3}",
                quantile(values, 0.5),
                quantile(values, 0.9)
            );
        }
    });
}
