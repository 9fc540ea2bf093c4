//! The compose stack, checked on this machine with real processes and real servers:
//!
//! 1. compose drift: every selfheal service of `docker-compose.yml` runs from its binary with
//!    exactly the compose command and environment (hostnames mapped to 127.0.0.1), becomes
//!    healthy, and reads every `SELFHEAL_*` variable it is given (`--dump-config`);
//! 2. grpcurl through reflection: list, describe, health and one read-only RPC per service;
//! 3. one `GetMeshStatus` with a known `traceparent` is one trace in Jaeger spanning all seven
//!    services, each peer's server span a child of an orchestrator client span;
//! 4. Prometheus scrapes all seven services;
//! 5. every query of the Grafana dashboard runs on the real Prometheus.
//!
//! The phases share the default ports, so they run in this one test, in order, against one
//! set of processes. Needs `bash scripts/backends.sh start`; fails (never skips) without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use selfheal_integration_tests::backends::{
    find_on_path, grpcurl, jaeger_query_url, port_in_use, prometheus_url, require_http, require_tcp,
};
use selfheal_integration_tests::compose::{ComposeFile, rewrite_for_loopback};
use selfheal_integration_tests::processes::{
    ProcessGuard, build_service_binaries, log_dir, poll, service_command,
};
use selfheal_integration_tests::{SERVICES, START_BACKENDS, Service, repo_root};
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
const JAEGER_DEADLINE: Duration = Duration::from_secs(45);
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(30);

/// The image's data directory (the `selfheal` user's home in `deploy/Dockerfile`); compose
/// paths under it are mapped to a directory of this run.
const IMAGE_DATA_DIR: &str = "/var/lib/selfheal";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_runs_on_real_servers() {
    let started = Instant::now();
    let mut timings = Vec::new();
    let mut lap = |phase: &str, since: &mut Instant| {
        timings.push(format!("{phase}: {:.1?}", since.elapsed()));
        *since = Instant::now();
    };
    let mut since = Instant::now();

    let compose = ComposeFile::load(&repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml parses");
    check_compose_tool().expect("docker-compose accepts docker-compose.yml");
    check_compose_shape(&compose).expect("docker-compose.yml declares the seven services");
    let data_dir = log_dir("mesh-data").expect("a data directory for this run");
    let plans = plan(&compose, &data_dir).expect("compose services map to local processes");
    require_backends(&plans)
        .await
        .expect("the real servers are up");
    lap("compose file and servers", &mut since);

    let bin_dir = build_service_binaries().expect("the service binaries build");
    lap("service binaries", &mut since);

    check_env_is_read(&bin_dir, &plans)
        .expect("every SELFHEAL_* variable of the compose file is read");
    lap("--dump-config drift", &mut since);

    let logs = log_dir("mesh").expect("a log directory for this run");
    let mut guard = start_processes(&bin_dir, &plans, &logs).expect("the seven services start");
    let result = async {
        wait_healthy(&mut guard).await.context("health")?;
        lap("processes healthy", &mut since);
        grpcurl_phase()
            .await
            .context("grpcurl through reflection")?;
        lap("grpcurl", &mut since);
        trace_phase().await.context("one trace in Jaeger")?;
        lap("Jaeger trace", &mut since);
        prometheus_phase()
            .await
            .context("Prometheus scrapes the mesh")?;
        lap("Prometheus targets", &mut since);
        dashboard_phase()
            .await
            .context("Grafana dashboard queries")?;
        lap("dashboard queries", &mut since);
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = result {
        panic!("{error:#}\n\nservice logs:\n{}", guard.logs(25));
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&logs);
    eprintln!(
        "mesh phases ({:.1?} in all):\n  {}",
        started.elapsed(),
        timings.join("\n  ")
    );
}

/// One service as compose runs it, and as this machine runs it.
#[derive(Debug)]
struct Plan {
    service: Service,
    /// The compose command after the binary name, exactly as written.
    args: Vec<String>,
    /// The command with paths in the image's data directory moved to this run's.
    local_args: Vec<String>,
    /// The compose environment exactly as written.
    compose_env: BTreeMap<String, String>,
    /// The environment with compose hosts and `0.0.0.0` rewritten to 127.0.0.1, paths in the
    /// image's data directory moved to this run's, and `XDG_DATA_HOME` there too (so that
    /// default data paths stay out of the home directory).
    local_env: BTreeMap<String, String>,
    /// Backing servers (compose host, port) the environment points at.
    backing: BTreeSet<(String, u16)>,
}

fn plan(compose: &ComposeFile, data_dir: &Path) -> Result<Vec<Plan>> {
    let hostnames = compose.hostnames();
    let selfheal: BTreeSet<&str> = SERVICES.iter().map(|s| s.name).collect();
    let mut plans = Vec::new();
    for service in SERVICES {
        let entry = compose.service(service.name)?;
        let args = entry.args();
        let Some((binary, rest)) = args.split_first() else {
            bail!("compose service {} has no command", service.name);
        };
        ensure!(
            *binary == service.binary(),
            "compose service {} runs {binary:?}, not {:?}",
            service.name,
            service.binary()
        );
        let compose_env = entry
            .env()
            .with_context(|| format!("environment of {}", service.name))?;
        let own_data = data_dir.join(service.name);
        let local_args = rest
            .iter()
            .map(|arg| match arg.split_once('=') {
                Some((key, value)) => format!("{key}={}", map_data_path(value, &own_data)),
                None => map_data_path(arg, &own_data),
            })
            .collect();
        let mut local_env = BTreeMap::new();
        let mut backing = BTreeSet::new();
        for (name, value) in &compose_env {
            let rewritten = rewrite_for_loopback(value, &hostnames);
            if let (Some(host), Some(port)) = (&rewritten.host, rewritten.port)
                && !selfheal.contains(host.as_str())
            {
                backing.insert((host.clone(), port));
            }
            local_env.insert(name.clone(), map_data_path(&rewritten.value, &own_data));
        }
        local_env
            .entry("XDG_DATA_HOME".to_owned())
            .or_insert_with(|| own_data.display().to_string());
        plans.push(Plan {
            service,
            args: rest.to_vec(),
            local_args,
            compose_env,
            local_env,
            backing,
        });
    }
    Ok(plans)
}

/// `value` with a leading [`IMAGE_DATA_DIR`] replaced by `local`.
fn map_data_path(value: &str, local: &Path) -> String {
    match value.strip_prefix(IMAGE_DATA_DIR) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", local.display())
        }
        _ => value.to_owned(),
    }
}

/// `docker-compose config -q` accepts the file, when the tool is installed.
fn check_compose_tool() -> Result<()> {
    let Some(tool) = find_on_path("docker-compose") else {
        eprintln!(
            "docker-compose is not installed; its validation of docker-compose.yml is not run"
        );
        return Ok(());
    };
    let output = Command::new(tool)
        .current_dir(repo_root())
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .output()
        .context("cannot run docker-compose")?;
    ensure!(
        output.status.success(),
        "docker-compose -f docker-compose.yml config -q rejects the file ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Ports as in the README's table, one image for all seven, a health check each.
fn check_compose_shape(compose: &ComposeFile) -> Result<()> {
    let mut images = BTreeSet::new();
    for service in SERVICES {
        let entry = compose.service(service.name)?;
        let ports = entry.port_mappings();
        for port in [service.grpc_port, service.http_port()] {
            let mapping = format!("{port}:{port}");
            ensure!(
                ports.contains(&mapping),
                "compose service {} publishes {mapping} (README's port table); it has {ports:?}",
                service.name
            );
        }
        ensure!(
            entry.healthcheck.is_some(),
            "compose service {} has a healthcheck",
            service.name
        );
        images.insert(entry.image.clone().unwrap_or_default());
    }
    ensure!(
        images.len() == 1,
        "the seven services run one image; compose names {images:?}"
    );
    Ok(())
}

/// Jaeger, Prometheus and every backing server the compose environment points at.
async fn require_backends(plans: &[Plan]) -> Result<()> {
    let jaeger = jaeger_query_url();
    require_http("Jaeger's query API", &format!("{jaeger}/api/services")).await?;
    require_tcp("Jaeger's OTLP gRPC receiver", 4317)?;
    require_http("Prometheus", &format!("{}/-/ready", prometheus_url())).await?;
    let backing: BTreeSet<&(String, u16)> = plans.iter().flat_map(|p| &p.backing).collect();
    for (host, port) in backing {
        require_tcp(&format!("{host} (compose host)"), *port)?;
    }
    Ok(())
}

/// Runs each binary with the compose environment and `--dump-config`: every `SELFHEAL_*`
/// variable must be a setting (`SECTION__KEY`) that shows up in the dump with its value.
fn check_env_is_read(bin_dir: &Path, plans: &[Plan]) -> Result<()> {
    let mut drift = Vec::new();
    for plan in plans {
        let binary = bin_dir.join(plan.service.binary());
        let mut args = plan.args.clone();
        args.push("--dump-config".to_owned());
        let output = service_command(&binary, &args, &plan.compose_env)
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        ensure!(
            output.status.success(),
            "{} rejects its compose environment ({}):\n{}",
            plan.service.binary(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dumped: toml::Value = toml::from_str(&stdout).with_context(|| {
            format!(
                "{} --dump-config prints TOML:\n{stdout}",
                plan.service.binary()
            )
        })?;
        for (key, value) in command_settings(&plan.args) {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            match lookup(&dumped, &path) {
                Some(found) if same_value(found, &value) => {}
                found => drift.push(format!(
                    "{}: --set {key}={value} in the command is not taken: {key} = {found:?}",
                    plan.service.name
                )),
            }
        }
        for (name, value) in &plan.compose_env {
            let Some(setting) = name.strip_prefix("SELFHEAL_") else {
                continue;
            };
            if !setting.contains("__") {
                drift.push(format!(
                    "{}: {name} is not a setting (settings are SELFHEAL_SECTION__KEY)",
                    plan.service.name
                ));
                continue;
            }
            let path: Vec<String> = setting.split("__").map(str::to_ascii_lowercase).collect();
            match lookup(&dumped, &path) {
                None => drift.push(format!(
                    "{}: {name} is ignored: {} is not in its --dump-config",
                    plan.service.name,
                    path.join(".")
                )),
                Some(found) if !same_value(found, value) => drift.push(format!(
                    "{}: {name}={value} is not taken: {} = {found}",
                    plan.service.name,
                    path.join(".")
                )),
                Some(_) => {}
            }
        }
    }
    ensure!(
        drift.is_empty(),
        "docker-compose.yml and the binaries disagree:\n  {}",
        drift.join("\n  ")
    );
    Ok(())
}

/// The `--set KEY=VALUE` (and `--set=KEY=VALUE`) settings of a command line.
fn command_settings(args: &[String]) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let setting = match arg.strip_prefix("--set=") {
            Some(inline) => Some(inline.to_owned()),
            None if arg == "--set" => iter.next().cloned(),
            None => None,
        };
        if let Some((key, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            settings.push((key.trim().to_owned(), value.to_owned()));
        }
    }
    settings
}

fn lookup<'a>(value: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter()
        .try_fold(value, |current, key| current.as_table()?.get(key))
}

/// Whether a dumped TOML value is the environment's `raw` value (durations compared as
/// durations: `2000ms` is `2s`).
fn same_value(dumped: &toml::Value, raw: &str) -> bool {
    let text = match dumped {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => return raw.parse::<f64>().is_ok_and(|r| r == *f),
        other => other.to_string(),
    };
    if text == raw {
        return true;
    }
    matches!(
        (humantime::parse_duration(&text), humantime::parse_duration(raw)),
        (Ok(a), Ok(b)) if a == b
    )
}

fn start_processes(bin_dir: &Path, plans: &[Plan], logs: &Path) -> Result<ProcessGuard> {
    let taken: Vec<u16> = SERVICES
        .iter()
        .flat_map(|s| [s.grpc_port, s.http_port()])
        .filter(|port| port_in_use(*port))
        .collect();
    ensure!(
        taken.is_empty(),
        "ports {taken:?} are in use on 127.0.0.1; stop what runs there (another `selfheal up` \
         or a test run) before this test"
    );
    let mut guard = ProcessGuard::default();
    for plan in plans {
        let binary = bin_dir.join(plan.service.binary());
        let command = service_command(&binary, &plan.local_args, &plan.local_env);
        guard.spawn(
            plan.service.name,
            command,
            logs.join(format!("{}.log", plan.service.name)),
        )?;
    }
    Ok(guard)
}

async fn wait_healthy(guard: &mut ProcessGuard) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let started = Instant::now();
    for service in SERVICES {
        loop {
            guard.check_alive()?;
            let healthz = http
                .get(format!("http://127.0.0.1:{}/healthz", service.http_port()))
                .send()
                .await
                .map(|r| r.status().as_u16());
            let serving = grpc_health(service.grpc_port, service.grpc_service).await;
            if healthz.as_ref().is_ok_and(|status| *status == 200)
                && serving == Some(ServingStatus::Serving)
            {
                break;
            }
            ensure!(
                started.elapsed() < HEALTH_DEADLINE,
                "{} is not healthy within {HEALTH_DEADLINE:?}: /healthz {healthz:?}, gRPC health \
                 {serving:?}",
                service.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn grpc_health(port: u16, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

// ---------------------------------------------------------------------------------------------
// grpcurl

/// One read-only RPC per service, called with an empty request.
const READ_ONLY_RPCS: [(&str, &str); 7] = [
    ("orchestrator", "GetMeshStatus"),
    ("detector", "ListIncidents"),
    ("rca", "Analyze"),
    ("patcher", "GenerateCandidates"),
    ("safety-gate", "Evaluate"),
    ("deployer", "Status"),
    ("audit", "Verify"),
];

async fn grpcurl_phase() -> Result<()> {
    let tool = grpcurl()?;
    let mut outcomes = Vec::new();
    for service in SERVICES {
        let addr = format!("127.0.0.1:{}", service.grpc_port);
        let listed = run_grpcurl(&tool, &["-plaintext", &addr, "list"])?.expect_ok("list")?;
        let listed: BTreeSet<&str> = listed.lines().map(str::trim).collect();
        for expected in [
            service.grpc_service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            ensure!(
                listed.contains(expected),
                "grpcurl list on {} does not show {expected}: {listed:?}",
                service.name
            );
        }

        let described = run_grpcurl(
            &tool,
            &["-plaintext", &addr, "describe", service.grpc_service],
        )?
        .expect_ok("describe")?;
        for rpc in proto_rpcs(service.grpc_service)? {
            ensure!(
                described.contains(&format!("rpc {rpc} (")),
                "grpcurl describe {} does not show rpc {rpc}:\n{described}",
                service.grpc_service
            );
        }

        let body = format!("{{\"service\":\"{}\"}}", service.grpc_service);
        let health = run_grpcurl(
            &tool,
            &[
                "-plaintext",
                "-d",
                &body,
                &addr,
                "grpc.health.v1.Health/Check",
            ],
        )?
        .expect_ok("Health/Check")?;
        ensure!(
            health.contains("\"SERVING\""),
            "{} health through grpcurl: {health}",
            service.name
        );

        let (_, rpc) = READ_ONLY_RPCS
            .iter()
            .find(|(name, _)| *name == service.name)
            .context("a read-only RPC for every service")?;
        let method = format!("{}/{rpc}", service.grpc_service);
        let called = run_grpcurl(&tool, &["-plaintext", "-d", "{}", &addr, &method])?;
        outcomes.push(format!("{method}: {}", judge_read_only(&method, &called)?));
        if service.name == "orchestrator" {
            check_mesh_status_json(&called.stdout)?;
        }
    }
    eprintln!(
        "read-only RPCs through grpcurl:\n  {}",
        outcomes.join("\n  ")
    );
    Ok(())
}

#[derive(Debug)]
struct GrpcurlOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl GrpcurlOutput {
    fn expect_ok(self, what: &str) -> Result<String> {
        ensure!(
            self.ok,
            "grpcurl {what} failed:\n{}{}",
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }

    /// `(code, message)` of a failed call, from grpcurl's `ERROR:` block.
    fn status(&self) -> Option<(String, String)> {
        let field = |key: &str| {
            self.stderr
                .lines()
                .chain(self.stdout.lines())
                .find_map(|line| line.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
        };
        Some((field("Code:")?, field("Message:").unwrap_or_default()))
    }
}

fn run_grpcurl(tool: &Path, args: &[&str]) -> Result<GrpcurlOutput> {
    let output = Command::new(tool)
        .args(["-max-time", "10"])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    Ok(GrpcurlOutput {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// OK passes; UNIMPLEMENTED passes only when its message names what is missing (the
/// services' "… is not available yet: it needs …"); INVALID_ARGUMENT passes when it explains
/// what the empty request lacks. Anything else fails.
fn judge_read_only(method: &str, output: &GrpcurlOutput) -> Result<String> {
    if output.ok {
        return Ok("OK".to_owned());
    }
    let Some((code, message)) = output.status() else {
        bail!(
            "{method} through grpcurl failed without a gRPC status:\n{}{}",
            output.stdout,
            output.stderr
        );
    };
    match code.as_str() {
        "Unimplemented" => {
            ensure!(
                message.contains("needs") && message.len() > "needs".len() + 10,
                "{method} is UNIMPLEMENTED without naming what it needs: {message:?}"
            );
            Ok(format!("UNIMPLEMENTED ({message})"))
        }
        "InvalidArgument" => {
            ensure!(
                !message.trim().is_empty(),
                "{method} rejects the empty request without saying why"
            );
            Ok(format!(
                "INVALID_ARGUMENT for the empty request ({message})"
            ))
        }
        _ => bail!("{method} answered {code}: {message}"),
    }
}

/// The `rpc` names of `grpc_service` (`selfheal.v1.Audit`) in `proto/selfheal/v1/*.proto`.
fn proto_rpcs(grpc_service: &str) -> Result<Vec<String>> {
    let short = grpc_service.rsplit('.').next().unwrap_or(grpc_service);
    let dir = repo_root().join("proto/selfheal/v1");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let Some(start) = text.find(&format!("service {short} {{")) else {
            continue;
        };
        let body = &text[start..];
        let body = &body[..body.find("\n}").unwrap_or(body.len())];
        return Ok(body
            .lines()
            .filter_map(|line| line.trim().strip_prefix("rpc "))
            .filter_map(|rest| rest.split('(').next())
            .map(|name| name.trim().to_owned())
            .collect());
    }
    bail!("no `service {short}` in {}", dir.display())
}

/// `GetMeshStatus` JSON lists the six peers, all SERVING.
fn check_mesh_status_json(json: &str) -> Result<()> {
    let value: Value = serde_json::from_str(json).context("GetMeshStatus prints JSON")?;
    let peers = value["peers"]
        .as_array()
        .context("GetMeshStatus has peers")?;
    let serving: BTreeSet<&str> = peers
        .iter()
        .filter(|peer| peer["status"] == "SERVING_STATUS_SERVING")
        .filter_map(|peer| peer["service"].as_str())
        .collect();
    let expected: BTreeSet<&str> = SERVICES[1..].iter().map(|s| s.name).collect();
    ensure!(
        serving == expected,
        "GetMeshStatus reports {serving:?} SERVING, expected {expected:?}: {json}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Jaeger

async fn trace_phase() -> Result<()> {
    let (trace_id, parent_span_id) = known_ids();
    let traceparent = format!("00-{trace_id}-{parent_span_id}-01");
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .context("orchestrator connects")?;
    let mut client = selfheal_proto::v1::orchestrator_client::OrchestratorClient::new(channel);
    let mut request = tonic::Request::new(selfheal_proto::v1::GetMeshStatusRequest {});
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse()?);
    let response = client
        .get_mesh_status(request)
        .await
        .context("GetMeshStatus")?
        .into_inner();
    let serving = response
        .peers
        .iter()
        .filter(|p| p.status() == selfheal_proto::v1::ServingStatus::Serving)
        .count();
    ensure!(serving == 6, "GetMeshStatus: {response:?}");

    let url = format!("{}/api/traces/{trace_id}", jaeger_query_url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    poll(
        &format!("trace {trace_id} in Jaeger with all seven services"),
        JAEGER_DEADLINE,
        || {
            let http = http.clone();
            let url = url.clone();
            let parent_span_id = parent_span_id.clone();
            async move {
                let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("{url} answered {}", response.status()));
                }
                let body: Value = response.json().await.map_err(|e| e.to_string())?;
                check_trace(&body, &parent_span_id)
            }
        },
    )
    .await
}

/// A trace id and parent span id unique to this run, with no leading zero digits (Jaeger's
/// JSON would drop them).
fn known_ids() -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = nanos ^ (u128::from(std::process::id()) << 64);
    let trace = format!("{:032x}", seed | (1u128 << 124));
    let span = format!("{:016x}", (seed as u64).rotate_left(17) | (1u64 << 60));
    (trace, span)
}

/// `Ok` when the trace holds spans of all seven services with correct links; `Err` says what
/// is missing so far.
fn check_trace(body: &Value, parent_span_id: &str) -> Result<(), String> {
    let trace = body["data"]
        .as_array()
        .and_then(|traces| traces.first())
        .ok_or("no trace yet")?;
    let processes = &trace["processes"];
    let spans = trace["spans"].as_array().ok_or("trace without spans")?;
    let service_of = |span: &Value| {
        span["processID"]
            .as_str()
            .and_then(|id| processes[id]["serviceName"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let kind_of = |span: &Value| {
        span["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|tag| tag["key"] == "span.kind")
            .and_then(|tag| tag["value"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let parent_of = |span: &Value| {
        span["references"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["refType"] == "CHILD_OF")
            .and_then(|r| r["spanID"].as_str())
            .map(str::to_owned)
    };
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .filter_map(|span| Some((span["spanID"].as_str()?, span)))
        .collect();

    let services: BTreeSet<String> = spans.iter().map(service_of).collect();
    let missing: Vec<String> = SERVICES
        .iter()
        .map(|s| s.binary())
        .filter(|name| !services.contains(name))
        .collect();
    if !missing.is_empty() {
        return Err(format!("no spans yet from {missing:?}; have {services:?}"));
    }

    let root = spans
        .iter()
        .find(|span| {
            service_of(span) == "selfheal-orchestrator"
                && kind_of(span) == "server"
                && span["operationName"]
                    .as_str()
                    .is_some_and(|op| op.ends_with("GetMeshStatus"))
        })
        .ok_or("no orchestrator server span for GetMeshStatus")?;
    let root_id = root["spanID"].as_str().unwrap_or_default();
    if parent_of(root).as_deref() != Some(parent_span_id) {
        return Err(format!(
            "the GetMeshStatus server span's parent is {:?}, not the caller's span {parent_span_id}",
            parent_of(root)
        ));
    }

    for service in &SERVICES[1..] {
        let name = service.binary();
        let linked = spans
            .iter()
            .filter(|span| service_of(span) == name && kind_of(span) == "server")
            .any(|span| {
                let Some(parent) = parent_of(span).and_then(|id| by_id.get(id.as_str()).copied())
                else {
                    return false;
                };
                service_of(parent) == "selfheal-orchestrator"
                    && kind_of(parent) == "client"
                    && descends_from(parent, root_id, &by_id, &parent_of)
            });
        if !linked {
            return Err(format!(
                "no {name} server span whose parent is an orchestrator client span under \
                 GetMeshStatus"
            ));
        }
    }
    Ok(())
}

fn descends_from(
    span: &Value,
    ancestor: &str,
    by_id: &BTreeMap<&str, &Value>,
    parent_of: &dyn Fn(&Value) -> Option<String>,
) -> bool {
    let mut current = span;
    for _ in 0..64 {
        let Some(parent) = parent_of(current) else {
            return false;
        };
        if parent == ancestor {
            return true;
        }
        match by_id.get(parent.as_str()) {
            Some(next) => current = next,
            None => return false,
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Prometheus and the dashboard

async fn prometheus_phase() -> Result<()> {
    let base = prometheus_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    poll(
        "all seven selfheal scrape targets up in Prometheus",
        PROMETHEUS_DEADLINE,
        || {
            let http = http.clone();
            let url = format!("{base}/api/v1/targets?state=active");
            async move {
                let body: Value = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let targets = body["data"]["activeTargets"]
                    .as_array()
                    .ok_or("no activeTargets")?;
                let mut problems = Vec::new();
                for service in SERVICES {
                    let instance = format!("127.0.0.1:{}", service.http_port());
                    match targets
                        .iter()
                        .find(|t| t["labels"]["instance"].as_str() == Some(instance.as_str()))
                    {
                        None => problems.push(format!(
                            "{instance} ({}) is not a target: Prometheus must run \
                             deploy/prometheus/prometheus.local.yml ({START_BACKENDS})",
                            service.name
                        )),
                        Some(t) if t["health"] != "up" => problems.push(format!(
                            "{instance} ({}) is {} ({})",
                            service.name, t["health"], t["lastError"]
                        )),
                        Some(_) => {}
                    }
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            }
        },
    )
    .await?;

    // The per-RPC counters of all seven services reach Prometheus under their `service` label.
    poll(
        "grpc_server_handled_total of all seven services in Prometheus",
        PROMETHEUS_DEADLINE,
        || {
            let http = http.clone();
            let base = base.clone();
            async move {
                let result = query(
                    &http,
                    &base,
                    "count by (service) (grpc_server_handled_total)",
                )
                .await
                .map_err(|e| format!("{e:#}"))?;
                let seen: BTreeSet<&str> = result
                    .iter()
                    .filter_map(|sample| sample["metric"]["service"].as_str())
                    .collect();
                let missing: Vec<&str> = SERVICES
                    .iter()
                    .map(|s| s.name)
                    .filter(|name| !seen.contains(name))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("no series yet for {missing:?}"))
                }
            }
        },
    )
    .await
}

/// Runs an instant query; errors carry Prometheus's own message.
async fn query(http: &reqwest::Client, base: &str, expr: &str) -> Result<Vec<Value>> {
    let response = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(
        status.is_success() && body["status"] == "success",
        "{status}: {} {}",
        body["errorType"],
        body["error"]
    );
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn dashboard_phase() -> Result<()> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no dashboards in {}", dir.display());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = prometheus_url();
    let mut failures = Vec::new();
    let mut count = 0;
    for file in files {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("{} is JSON", file.display()))?;
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        ensure!(!exprs.is_empty(), "{} has no queries", file.display());
        for expr in exprs {
            count += 1;
            let concrete = substitute_grafana_variables(&expr);
            if let Err(error) = query(&http, &base, &concrete).await {
                failures.push(format!(
                    "{}: {concrete}\n    {error:#}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "dashboard queries Prometheus rejects:\n  {}",
        failures.join("\n  ")
    );
    eprintln!("{count} dashboard queries run on Prometheus");
    Ok(())
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) if !expr.trim().is_empty() => {
                        out.push(expr.clone())
                    }
                    _ => collect_exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

/// Grafana's interval variables become `1m`; any other `$name`/`${name}` (dashboard
/// variables, used in label matchers) becomes `.*`.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(index) = rest.find('$') {
        out.push_str(&rest[..index]);
        let after = &rest[index + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            let name = inner[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        out.push_str(match name {
            "__rate_interval" | "__interval" | "__range" | "interval" => "1m",
            _ => ".*",
        });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}
