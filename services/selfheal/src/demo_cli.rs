//! How `selfheal demo` talks to a person: a live timeline, then the summary as tables; or one
//! JSON object for programs; and the figures in a file for dashboards.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use selfheal::demo::{DemoOptions, DemoSummary, TimelineEntry};
use selfheal_service::EX_CONFIG;
use tokio::sync::mpsc;

/// What to print and where.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) verbose: bool,
    /// With `--realtime`: the least time between two timeline lines.
    pub(crate) pace: Option<Duration>,
    pub(crate) metrics_out: Option<PathBuf>,
}

/// Traces go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set: one trace per saga. The timeline
/// is the demo's output; the services' own logs only show warnings unless RUST_LOG asks for more.
fn telemetry() -> Result<selfheal_telemetry::TelemetryGuard, ExitCode> {
    let mut telemetry = selfheal_telemetry::TelemetryConfig::from_env("selfheal");
    telemetry.default_filter = "warn".to_owned();
    selfheal_telemetry::init(&telemetry).map_err(|error| {
        eprintln!("selfheal demo: {error}");
        ExitCode::FAILURE
    })
}

/// Runs `work` with its timeline sink while the timeline prints; `None` when interrupted.
async fn with_timeline<T>(
    output: &Output,
    work: impl FnOnce(mpsc::UnboundedSender<TimelineEntry>) -> T,
) -> Option<T::Output>
where
    T: std::future::Future,
{
    let (sink, events) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print_timeline(
        events,
        !output.json,
        output.verbose,
        output.pace,
    ));
    let result = tokio::select! {
        result = work(sink) => result,
        () = selfheal_service::ctrl_c_or_sigterm() => {
            eprintln!("selfheal demo: interrupted");
            return None;
        }
    };
    let _ = printer.await;
    Some(result)
}

/// Prints `value` as pretty JSON; false (with the error said) when it cannot be encoded.
fn print_json(value: &impl serde::Serialize) -> bool {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(error) => {
            eprintln!("selfheal demo: {error}");
            false
        }
    }
}

pub(crate) async fn run(options: DemoOptions, output: Output) -> ExitCode {
    let _telemetry = match telemetry() {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    if !output.json {
        println!(
            "selfheal demo: healing {} end to end",
            selfheal::demo::SERVICE
        );
        println!("(the first run builds the example; later runs reuse the build)\n");
    }
    let Some(result) = with_timeline(&output, |sink| selfheal::demo::run(options, sink)).await
    else {
        return ExitCode::FAILURE;
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error @ selfheal::demo::DemoError::Mesh(selfheal::mesh::MeshError::Config(_))) => {
            eprintln!("selfheal demo: {error}");
            return ExitCode::from(EX_CONFIG as u8);
        }
        Err(error) => {
            eprintln!("selfheal demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &output.metrics_out
        && let Err(error) = write_metrics(path, &summary)
    {
        eprintln!("selfheal demo: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if output.json {
        if !print_json(&summary) {
            return ExitCode::FAILURE;
        }
    } else {
        print_summary(&summary, output.verbose);
    }
    if summary.healed() && summary.audit_chain_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `selfheal demo --inject-failure NAME`: one scenario of the failure matrix with the demo's live
/// timeline, then its verdict. Exits 0 when the reaction was the expected one, 1 when not, 64
/// for a name the matrix does not have.
pub(crate) async fn run_scenario(
    name: &str,
    work_dir: Option<PathBuf>,
    output: Output,
) -> ExitCode {
    let Some(info) = selfheal::inject::MATRIX.iter().find(|s| s.name == name) else {
        eprintln!(
            "selfheal demo: --inject-failure {name:?} is not a scenario of the matrix; one of: {}",
            selfheal::inject::names().join(", ")
        );
        return ExitCode::from(EX_CONFIG as u8);
    };
    let _telemetry = match telemetry() {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let (work, _temp) = match work_dir {
        Some(dir) => (dir, None),
        None => match tempfile::Builder::new()
            .prefix("selfheal-demo-inject-")
            .tempdir()
        {
            Ok(temp) => (temp.path().to_path_buf(), Some(temp)),
            Err(error) => {
                eprintln!("selfheal demo: cannot create a work directory: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !output.json {
        println!("selfheal demo: injecting {name}");
        println!("expected reaction: {}", info.expected);
        println!("(the first run builds the example; later runs reuse the build)\n");
    }
    let Some(result) = with_timeline(&output, |sink| {
        selfheal::inject::run_with_timeline(name, &work, sink)
    })
    .await
    else {
        return ExitCode::FAILURE;
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("selfheal demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    if output.json {
        if !print_json(&outcome) {
            return ExitCode::FAILURE;
        }
    } else {
        let mut verdict = table(&selfheal::inject::Outcome::HEADINGS);
        let mut cells = outcome.cells();
        cells[3] = cells[3].to_uppercase();
        verdict.add_row(cells);
        println!("\n{verdict}");
    }
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn print_timeline(
    mut events: mpsc::UnboundedReceiver<TimelineEntry>,
    enabled: bool,
    verbose: bool,
    pace: Option<Duration>,
) {
    let mut last_line: Option<Instant> = None;
    while let Some(entry) = events.recv().await {
        if !enabled {
            continue;
        }
        if let (Some(pace), Some(last)) = (pace, last_line) {
            let due = last + pace;
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        last_line = Some(Instant::now());
        println!(
            "{:>8.2}s  {:<11} {}",
            entry.elapsed_seconds, entry.step, entry.message
        );
        if verbose {
            for line in &entry.details {
                println!("{:>10}  {:<11}   {line}", "", "");
            }
        }
    }
}

/// A table that wraps its cells to fit a terminal-sized width.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(110)
        .set_header(header.iter().copied());
    table
}

fn print_summary(summary: &DemoSummary, verbose: bool) {
    println!();
    let mut overview = table(&["summary", ""]);
    let rows = [
        ("status", summary.status.clone()),
        ("outcome", summary.outcome.clone()),
        (
            "MTTR (first failing request → verified recovery)",
            format!("{:.1} s", summary.mttr_seconds),
        ),
        (
            "error rate before → after",
            format!(
                "{:.1}% ({} requests) → {:.2}% ({} requests)",
                summary.error_rate_before * 100.0,
                summary.requests_before,
                summary.error_rate_after * 100.0,
                summary.requests_after
            ),
        ),
        (
            "audit chain",
            format!(
                "{} ({} records)",
                if summary.audit_chain_ok {
                    "verified"
                } else {
                    "BROKEN"
                },
                summary.audit_records
            ),
        ),
        (
            "saga / incident",
            format!("{} / {}", summary.saga_id, summary.incident_id),
        ),
    ];
    for (name, value) in rows {
        overview.add_row([name.to_owned(), value]);
    }
    println!("{overview}");

    let mut steps = table(&["step", "time", "status", "what happened"]);
    for step in &summary.steps {
        steps.add_row([
            step.name.clone(),
            format!("{:.2} s", step.seconds),
            step.status.clone(),
            step.summary.clone(),
        ]);
    }
    println!("{steps}");

    if !summary.decisions.is_empty() {
        let mut decisions = table(&["decision", "outcome", "confidence"]);
        for d in &summary.decisions {
            decisions.add_row([
                format!("{} · {}", d.kind, d.subject),
                d.outcome.clone(),
                format!("{:.2}", d.confidence),
            ]);
        }
        println!("{decisions}");
    }
    if verbose {
        println!("scenario repository: {}", summary.repository);
    }
}

/// The figures as JSON (`.json`) or in the Prometheus text format.
fn write_metrics(path: &Path, summary: &DemoSummary) -> std::io::Result<()> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?
    } else {
        prometheus_text(summary).map_err(std::io::Error::other)?
    };
    std::fs::write(path, text)
}

fn prometheus_text(summary: &DemoSummary) -> Result<String, prometheus::Error> {
    use prometheus::{Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: f64| -> Result<(), prometheus::Error> {
        let gauge = Gauge::with_opts(Opts::new(name, help))?;
        gauge.set(value);
        registry.register(Box::new(gauge))
    };
    gauge(
        "selfheal_demo_mttr_seconds",
        "From the first failing request to verified recovery",
        summary.mttr_seconds,
    )?;
    gauge(
        "selfheal_demo_error_rate_before",
        "Error rate while the buggy version served",
        summary.error_rate_before,
    )?;
    gauge(
        "selfheal_demo_error_rate_after",
        "Error rate after recovery",
        summary.error_rate_after,
    )?;
    gauge(
        "selfheal_demo_healed",
        "1 when the saga resolved the incident",
        if summary.healed() { 1.0 } else { 0.0 },
    )?;
    let steps = GaugeVec::new(
        Opts::new("selfheal_demo_step_seconds", "Time spent in each step"),
        &["step"],
    )?;
    for step in &summary.steps {
        steps
            .with_label_values(&[step.name.as_str()])
            .add(step.seconds);
    }
    registry.register(Box::new(steps))?;
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}
