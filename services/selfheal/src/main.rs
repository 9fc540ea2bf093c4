//! `selfheal`: run the mesh, and talk to it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use selfheal::load::{LoadPlan, LoadSummary};
use selfheal::mesh::{MeshOptions, RunningMesh};
use selfheal_service::{EX_CONFIG, ProcessEnv};

mod demo_cli;

#[derive(Parser, Debug)]
#[command(
    name = "selfheal",
    version,
    about = "Self-healing for production services: detect, analyse, fix, prove safe, canary, verify, explain.",
    long_about = "selfheal watches running services; when one starts failing it finds the root cause and the \
faulty line, writes a fix, proves it safe in a sandbox, ships it as a canary with automatic rollback, \
verifies recovery, and records every decision in a tamper-evident audit trail.\n\n\
`selfheal up` runs all seven services in this process, each on its own port, talking real gRPC."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the system heal the payment-service, end to end, on the embedded default.
    #[command(
        long_about = "Starts the seven services in this process, builds the payment-service scenario (a good \
commit, then a commit whose .unwrap() panics for ~15% of customers), deploys the good and then the \
buggy version behind the deployer's router, and sends steady load. From then on only the system acts: \
detect → analyse → localise → plan → patch → gate → canary 10→50→100 → verify. The demo prints the \
timeline as it happens and a summary: MTTR from the first failing request to verified recovery with a \
per-step breakdown, the error rate before and after, and the decisions taken.",
        after_help = "Exit status: 0 when the service was healed and the audit chain verifies (with \
--inject-failure: when the reaction was the expected one), 1 otherwise, 64 on bad settings. The first run builds the example (a minute or two); later runs reuse the build."
    )]
    Demo {
        /// Print the summary as one JSON object (status, mttr_seconds, error_rate_before,
        /// error_rate_after, steps, decisions, timeline) instead of the timeline and tables.
        #[arg(long)]
        json: bool,
        /// Also write the figures to FILE: JSON when it ends in .json, else Prometheus text format.
        #[arg(long, value_name = "FILE")]
        metrics_out: Option<PathBuf>,
        /// Pace the timeline for a presentation: at most one line per --pace.
        #[arg(long)]
        realtime: bool,
        /// Time between two timeline lines with --realtime.
        #[arg(long, default_value = "1s", value_parser = humantime_duration)]
        pace: Duration,
        /// Show every decision's factors and alternatives, and the setup details.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Keep the scenario repository, builds and audit file here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// The example to heal.
        #[arg(long, value_name = "DIR")]
        example: Option<PathBuf>,
        /// Requests per second of the load generator.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Give up when the saga has not finished after this long.
        #[arg(long, default_value = "10m", value_parser = humantime_duration)]
        timeout: Duration,
        /// Override a setting of one service, e.g. `--set detector.detection.window=5s`.
        #[arg(long = "set", value_name = "SERVICE.KEY=VALUE")]
        set: Vec<String>,
        /// Inject one scenario of the failure matrix (`selfheal inject --list` names all 20):
        /// its fault goes into the demo, the live timeline shows the reaction, and the verdict
        /// compares it with the expected one, as `selfheal inject --scenario NAME` judges it.
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with_all = ["example", "set", "metrics_out", "rate", "timeout"]
        )]
        inject_failure: Option<String>,
    },
    /// Run the failure-injection matrix: real faults in real processes, reactions judged from state.
    #[command(
        after_help = "Each scenario injects a real fault (a bad release, an unreachable store, a policy \
that rejects every fix, a hanging LLM endpoint, a second alert) and judges the reaction from the \
saga's final state and decisions, the deployer's stable version and the rollout's events. \
Scenarios not built yet are listed as such and never count as passing. Exit status: 0 when every \
scenario run passed."
    )]
    Inject {
        /// One scenario by name.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["all", "chaos"], required_unless_present_any = ["all", "list", "chaos"])]
        scenario: Option<String>,
        /// Every built scenario, then the table of all twenty.
        #[arg(long)]
        all: bool,
        /// List the scenarios and their expected reactions.
        #[arg(long)]
        list: bool,
        /// Print the outcomes as JSON.
        #[arg(long)]
        json: bool,
        /// Keep each scenario's repositories and stores here.
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Inject random faults (buggy releases, repeated alerts, killed processes, aborts) into
        /// the running demo for --duration, then check the invariants: no audit record lost,
        /// the chain verifies, one lock holder per service, every canary concluded, every
        /// incident finished.
        #[arg(long, conflicts_with = "all")]
        chaos: bool,
        /// How long --chaos injects faults (the sagas then get up to four minutes to finish).
        // `requires = "chaos"` would not do: the flag's implicit default satisfies it.
        #[arg(long, default_value = "60s", value_parser = humantime_duration, conflicts_with_all = ["all", "scenario", "list"])]
        duration: Duration,
        /// Seed of --chaos's random choices; the same seed repeats the same choices.
        #[arg(long, conflicts_with_all = ["all", "scenario", "list"])]
        seed: Option<u64>,
    },
    /// List the sagas the orchestrator runs or ran, show one, approve or abort one.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// Run all seven services in this process on loopback ports, until Ctrl-C.
    #[command(
        after_help = "Ports: orchestrator 50051, detector 50052, rca 50053, patcher 50054, \
safety-gate 50055, deployer 50056, audit 50057; each service's /metrics and /healthz on its port + 10.\n\
Settings: one TOML file with a table per service ([detector.server] …), SELFHEAL_<SERVICE>__<KEY> \
environment variables (SELFHEAL_DETECTOR__SERVER__SHUTDOWN_GRACE=5s), then --set. \
A key no setting of that service has, or a --set that names no service, is refused with exit 64."
    )]
    Up {
        /// TOML file with one table per service.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address every service binds.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// gRPC port of the orchestrator; the others follow (0 picks free ports).
        #[arg(long, default_value_t = 50051)]
        base_port: u16,
        /// Override a setting of one service, e.g. `--set audit.server.shutdown_grace=3s`.
        #[arg(long = "set", value_name = "SERVICE.KEY=VALUE")]
        set: Vec<String>,
        /// Print where each service would listen and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run one service of the mesh on its own, until Ctrl-C or SIGTERM (its peers named with
    /// --set, e.g. `--set orchestrator.peers.audit=http://127.0.0.1:50057`).
    #[command(hide = true)]
    Serve {
        /// orchestrator, detector, rca, patcher, safety-gate, deployer or audit.
        service: String,
        /// Override a setting of the service, e.g. `--set orchestrator.server.grpc_addr=127.0.0.1:50151`.
        #[arg(long = "set", value_name = "SERVICE.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Send steady traffic to a service (the demo target's request mix) and report success and latency.
    #[command(
        after_help = "Open-loop: requests start at --rate per second whatever the answers; when \
--concurrency requests are in flight a tick is skipped and counted. Error rate = 5xx and failed \
requests over all finished requests. Ctrl-C stops early and still prints the summary."
    )]
    Load {
        /// Base URL of the service.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// Requests started per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// How long to run.
        #[arg(long, default_value = "30s", value_parser = humantime_duration)]
        duration: Duration,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Customers drawn from cust-0000 up to this count.
        #[arg(long, default_value_t = 1000)]
        customers: u32,
        /// Deadline of one request.
        #[arg(long, default_value = "5s", value_parser = humantime_duration)]
        timeout: Duration,
        /// Print the summary as JSON (no progress).
        #[arg(long)]
        json: bool,
    },
    /// Inspect the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print every decision taken for an incident as a readable report.
    Explain {
        /// The incident id.
        incident: String,
        /// gRPC address of the audit service.
        #[arg(long, default_value = "http://127.0.0.1:50057", env = "SELFHEAL_AUDIT")]
        audit: String,
        /// Print the decision records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the health of every service of a running mesh.
    Status {
        /// gRPC address of the orchestrator.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            env = "SELFHEAL_ORCHESTRATOR"
        )]
        orchestrator: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Deadline for the whole check.
        #[arg(long, default_value = "5s", value_parser = humantime_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args, Debug)]
struct OrchestratorArgs {
    /// gRPC address of the orchestrator.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "SELFHEAL_ORCHESTRATOR",
        global = true
    )]
    orchestrator: String,
    /// Deadline of the call.
    #[arg(long, default_value = "10s", value_parser = humantime_duration, global = true)]
    timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum IncidentsCommand {
    /// Sagas, newest first, as a table.
    List {
        /// Only this service's sagas.
        #[arg(long, default_value = "")]
        service: String,
        /// Only sagas in this state (resolved, escalated, awaiting_approval, …).
        #[arg(long, value_parser = selfheal::incidents::parse_state)]
        state: Option<selfheal_proto::v1::SagaState>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: OrchestratorArgs,
    },
    /// One saga (by saga id or incident id): its steps as a timeline and its decisions.
    Show {
        /// A saga id or an incident id.
        id: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: OrchestratorArgs,
    },
    /// Let a saga waiting for a human continue, or acknowledge an escalation.
    Approve {
        saga: String,
        /// Who approves (recorded in the audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        approver: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        target: OrchestratorArgs,
    },
    /// Stop a saga; its compensations run (a canary in flight is rolled back).
    Abort {
        saga: String,
        /// Who aborts (recorded in the audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: OrchestratorArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Walk the hash chain and its signed checkpoints; exit 1 when it is broken.
    Verify {
        /// gRPC address of the audit service.
        #[arg(long, default_value = "http://127.0.0.1:50057", env = "SELFHEAL_AUDIT")]
        audit: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| error.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("selfheal: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Demo {
                json,
                metrics_out,
                realtime,
                pace,
                verbose,
                work_dir,
                example,
                rate,
                timeout,
                set,
                inject_failure,
            } => {
                let output = demo_cli::Output {
                    json,
                    verbose,
                    pace: realtime.then_some(pace),
                    metrics_out,
                };
                if let Some(name) = inject_failure {
                    return demo_cli::run_scenario(&name, work_dir, output).await;
                }
                let mut options = selfheal::demo::DemoOptions {
                    work_dir,
                    rate,
                    timeout,
                    overrides: set,
                    ..Default::default()
                };
                if let Some(example) = example {
                    options.example = example;
                }
                demo_cli::run(options, output).await
            }
            Command::Incidents(command) => incidents(command).await,
            Command::Inject {
                scenario,
                all,
                list,
                json,
                work_dir,
                chaos: true,
                duration,
                seed,
            } => {
                let _ = (scenario, all, list);
                chaos(duration, seed, json, work_dir).await
            }
            Command::Inject {
                scenario,
                all,
                list,
                json,
                work_dir,
                ..
            } => inject(scenario, all, list, json, work_dir).await,
            Command::Up {
                config,
                host,
                base_port,
                set,
                dry_run,
            } => up(config, host, base_port, set, dry_run).await,
            Command::Serve { service, set } => serve(&service, set).await,
            Command::Status {
                orchestrator,
                json,
                timeout,
            } => status(&orchestrator, json, timeout).await,
            Command::Audit(AuditCommand::Verify { audit, json }) => {
                audit_verify(&audit, json).await
            }
            Command::Explain {
                incident,
                audit,
                json,
            } => explain(&audit, &incident, json).await,
            Command::Load {
                target,
                rate,
                duration,
                concurrency,
                customers,
                timeout,
                json,
            } => {
                let plan = LoadPlan {
                    target,
                    rate,
                    duration,
                    concurrency,
                    customers,
                    timeout,
                };
                load(plan, json).await
            }
        }
    })
}

/// A table that wraps its cells to fit 140 columns.
fn wide_table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_width(140)
        .set_header(header);
    table
}

/// `given`, or a new temporary directory that lives as long as the returned guard.
fn work_dir_or_temp(
    given: Option<PathBuf>,
    prefix: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), ExitCode> {
    if let Some(dir) = given {
        return Ok((dir, None));
    }
    match tempfile::Builder::new().prefix(prefix).tempdir() {
        Ok(temp) => Ok((temp.path().to_path_buf(), Some(temp))),
        Err(error) => {
            eprintln!("selfheal inject: cannot create a work directory: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

async fn chaos(
    duration: Duration,
    seed: Option<u64>,
    json: bool,
    work_dir: Option<PathBuf>,
) -> ExitCode {
    // Faults need time to act, and the run's clock must stay representable.
    if duration < Duration::from_secs(5) || duration > Duration::from_secs(24 * 3600) {
        eprintln!(
            "selfheal inject: --duration {} is out of range; give 5s to 24h (e.g. --duration 60s)",
            humantime::format_duration(duration)
        );
        return ExitCode::from(EX_CONFIG as u8);
    }
    let (work, _temp) = match work_dir_or_temp(work_dir, "selfheal-chaos-") {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    if !json {
        eprintln!(
            "chaos for {} with seed {seed} (repeat it with --seed {seed}); the sagas then get up to four minutes to finish",
            humantime::format_duration(duration)
        );
    }
    let options = selfheal::inject::chaos::ChaosOptions {
        duration,
        seed,
        work,
    };
    let report = match selfheal::inject::chaos::run(options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("selfheal inject --chaos: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        if !print_json(&report) {
            return ExitCode::FAILURE;
        }
    } else {
        let mut faults = wide_table(["at", "fault", "what happened"]);
        for fault in &report.faults {
            faults.add_row([
                format!("{:.1} s", fault.at_seconds),
                fault.fault.clone(),
                fault.detail.clone(),
            ]);
        }
        println!("{faults}");
        let sagas: Vec<String> = report
            .sagas
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        println!(
            "{} faults, {} incidents, sagas: {}; {} answered by the on-call stand-in",
            report.faults.len(),
            report.incidents,
            if sagas.is_empty() {
                "none".to_owned()
            } else {
                sagas.join(", ")
            },
            report.acknowledged
        );
        let mut invariants = wide_table(["invariant", "held", "detail"]);
        for invariant in &report.invariants {
            invariants.add_row([
                invariant.name.clone(),
                if invariant.held { "yes" } else { "NO" }.to_owned(),
                invariant.detail.clone(),
            ]);
        }
        println!("{invariants}");
    }
    if report.held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn inject(
    scenario: Option<String>,
    all: bool,
    list: bool,
    json: bool,
    work_dir: Option<PathBuf>,
) -> ExitCode {
    use selfheal::inject::{MATRIX, Outcome};
    if list {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "scenario",
            "expected reaction",
            "built",
        ]);
        for row in MATRIX {
            table.add_row([
                row.name,
                row.expected,
                if row.built() { "yes" } else { "not yet" },
            ]);
        }
        println!("{table}");
        return ExitCode::SUCCESS;
    }
    let (work, _temp) = match work_dir_or_temp(work_dir, "selfheal-inject-") {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let names: Vec<String> = match scenario {
        Some(name) => vec![name],
        None if all => MATRIX.iter().map(|s| s.name.to_owned()).collect(),
        None => Vec::new(),
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    for name in &names {
        if !json {
            eprintln!("▶ {name}");
        }
        match selfheal::inject::run(name, &work).await {
            Ok(outcome) => {
                if !json {
                    eprintln!("  {}: {}", outcome.result, outcome.observed);
                }
                outcomes.push(outcome);
            }
            Err(error) => {
                eprintln!("selfheal inject: {error}");
                return ExitCode::from(EX_CONFIG as u8);
            }
        }
    }
    if json {
        if !print_json(&outcomes) {
            return ExitCode::FAILURE;
        }
    } else {
        let mut table = wide_table(Outcome::HEADINGS);
        for o in &outcomes {
            table.add_row(o.cells());
        }
        println!("{table}");
        let passed = outcomes.iter().filter(|o| o.passed()).count();
        println!("{passed}/{} passed", outcomes.len());
    }
    let failed = outcomes.iter().any(|o| o.result == "fail");
    let unbuilt = outcomes.iter().any(|o| o.result == "not built");
    if failed || unbuilt {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn incidents(command: IncidentsCommand) -> ExitCode {
    use selfheal::incidents as inc;
    let result = match command {
        IncidentsCommand::List {
            service,
            state,
            limit,
            json,
            target,
        } => inc::list(&target.orchestrator, &service, state, limit, target.timeout)
            .await
            .map(|sagas| {
                if json {
                    serde_json::to_string_pretty(&sagas).unwrap_or_default()
                } else {
                    inc::render_list(&sagas)
                }
            }),
        IncidentsCommand::Show { id, json, target } => {
            inc::show(&target.orchestrator, &id, target.timeout)
                .await
                .map(|saga| {
                    if json {
                        serde_json::to_string_pretty(&saga).unwrap_or_default()
                    } else {
                        inc::render_saga(&saga)
                    }
                })
        }
        IncidentsCommand::Approve {
            saga,
            approver,
            comment,
            target,
        } => inc::approve(
            &target.orchestrator,
            &saga,
            &approver,
            &comment,
            target.timeout,
        )
        .await
        .map(|state| format!("saga {saga} is now {state}")),
        IncidentsCommand::Abort {
            saga,
            actor,
            reason,
            target,
        } => inc::abort(&target.orchestrator, &saga, &actor, &reason, target.timeout)
            .await
            .map(|state| format!("saga {saga} is now {state}")),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("selfheal incidents: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn up(
    config: Option<PathBuf>,
    host: IpAddr,
    base_port: u16,
    set: Vec<String>,
    dry_run: bool,
) -> ExitCode {
    let _telemetry = match telemetry() {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let options = MeshOptions {
        host,
        base_port,
        config_file: config.as_deref(),
        overrides: set,
        env: &ProcessEnv,
    };
    let mut mesh = match selfheal::mesh::start(options).await {
        Ok(mesh) => mesh,
        Err(error @ selfheal::mesh::MeshError::Config(_)) => {
            eprintln!("selfheal up: {error}");
            return ExitCode::from(EX_CONFIG as u8);
        }
        Err(error) => {
            eprintln!(
                "selfheal up: {error}\nhint: another selfheal may be running; try --base-port or `selfheal status`"
            );
            return ExitCode::FAILURE;
        }
    };
    print_endpoints(&mesh);
    if dry_run {
        return stop(mesh).await;
    }
    println!("all seven services are up; Ctrl-C stops them");
    tokio::select! {
        () = selfheal_service::ctrl_c_or_sigterm() => {
            println!("stopping…");
            stop(mesh).await
        }
        result = mesh.any_stopped() => {
            if let Err(error) = result {
                eprintln!("selfheal up: {error}");
            }
            let _ = stop(mesh).await;
            ExitCode::FAILURE
        }
    }
}

/// Logs and traces of a process that runs services, as the standard variables set them.
fn telemetry() -> Result<selfheal_telemetry::TelemetryGuard, ExitCode> {
    selfheal_telemetry::init(&selfheal_telemetry::TelemetryConfig::from_env("selfheal")).map_err(
        |error| {
            eprintln!("selfheal: {error}");
            ExitCode::FAILURE
        },
    )
}

async fn serve(service: &str, set: Vec<String>) -> ExitCode {
    let _telemetry = match telemetry() {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let options = MeshOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        base_port: 0,
        config_file: None,
        overrides: set,
        env: &ProcessEnv,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            selfheal_service::ctrl_c_or_sigterm().await;
            shutdown.cancel();
        })
    };
    let served = selfheal::mesh::serve_one(service, options, shutdown).await;
    signal.abort();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ selfheal::mesh::MeshError::Config(_)) => {
            eprintln!("selfheal serve: {error}");
            ExitCode::from(EX_CONFIG as u8)
        }
        Err(error) => {
            eprintln!("selfheal serve: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn stop(mesh: RunningMesh) -> ExitCode {
    match mesh.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("selfheal up: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_endpoints(mesh: &RunningMesh) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["service", "gRPC", "metrics", "health"]);
    for endpoint in mesh.endpoints() {
        table.add_row([
            endpoint.service.to_owned(),
            endpoint.grpc_addr.to_string(),
            format!("http://{}/metrics", endpoint.http_addr),
            format!("http://{}/healthz", endpoint.http_addr),
        ]);
    }
    println!("{table}");
}

async fn status(orchestrator: &str, json: bool, timeout: Duration) -> ExitCode {
    let rows = match selfheal::status::mesh_status(orchestrator, timeout).await {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("selfheal status: {error}");
            return ExitCode::FAILURE;
        }
    };
    let healthy = rows.iter().all(|row| row.status == "SERVING");
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("selfheal status: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(["service", "address", "status", "latency", "error"]);
        for row in &rows {
            table.add_row([
                row.service.clone(),
                row.address.clone(),
                row.status.to_owned(),
                format!("{:.1} ms", row.latency_ms),
                row.error.clone(),
            ]);
        }
        println!("{table}");
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn load(plan: LoadPlan, json: bool) -> ExitCode {
    let stop = tokio_util::sync::CancellationToken::new();
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        selfheal_service::ctrl_c_or_sigterm().await;
        ctrl_c.cancel();
    });
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(plan.duration.as_secs().max(1))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = selfheal::load::run(&plan, stop, |so_far| {
        bar.set_position(so_far.elapsed_seconds as u64);
        bar.set_message(format!(
            "{} sent, {:.1}% errors, p99 {:.1} ms",
            so_far.sent,
            so_far.error_rate * 100.0,
            so_far.latency_ms_p99
        ));
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(summary) if json => match serde_json::to_string_pretty(&summary) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("selfheal load: {error}");
                ExitCode::FAILURE
            }
        },
        Ok(summary) => {
            print_load_summary(&summary);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("selfheal load: {error}");
            ExitCode::from(EX_CONFIG as u8)
        }
    }
}

fn print_load_summary(summary: &LoadSummary) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["", "value"]);
    let rows = [
        ("target", summary.target.clone()),
        ("duration", format!("{:.1} s", summary.elapsed_seconds)),
        (
            "sent",
            format!("{} ({:.1}/s)", summary.sent, summary.achieved_rate),
        ),
        ("2xx/3xx", summary.succeeded.to_string()),
        ("4xx", summary.client_errors.to_string()),
        ("5xx", summary.server_errors.to_string()),
        ("failed (connect/timeout)", summary.failed.to_string()),
        ("skipped (client saturated)", summary.skipped.to_string()),
        ("error rate", format!("{:.2}%", summary.error_rate * 100.0)),
        (
            "latency p50 / p90 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                summary.latency_ms_p50,
                summary.latency_ms_p90,
                summary.latency_ms_p99,
                summary.latency_ms_max
            ),
        ),
    ];
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    println!("{table}");
}

const AUDIT_TIMEOUT: Duration = Duration::from_secs(60);

fn print_json<T: serde::Serialize>(value: &T) -> bool {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(error) => {
            eprintln!("selfheal: {error}");
            false
        }
    }
}

async fn audit_verify(address: &str, json: bool) -> ExitCode {
    match selfheal::audit::verify(address, AUDIT_TIMEOUT).await {
        Ok((outcome, rendered)) => {
            let printed = if json {
                print_json(&outcome)
            } else {
                println!("{rendered}");
                true
            };
            if outcome.ok && printed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("selfheal audit verify: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn explain(address: &str, incident: &str, json: bool) -> ExitCode {
    match selfheal::audit::explain(address, incident, AUDIT_TIMEOUT).await {
        Ok((records, _)) if json => {
            if print_json(&records) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok((records, rendered)) => {
            if records.is_empty() {
                eprintln!("selfheal explain: no decisions are recorded for incident {incident:?}");
                return ExitCode::FAILURE;
            }
            println!("{rendered}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("selfheal explain: {error}");
            ExitCode::FAILURE
        }
    }
}
