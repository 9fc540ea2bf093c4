//! The whole `main` of a service binary: flags, configuration (exit 64 when invalid, before
//! any port is bound), telemetry, listeners, signals, and `run`.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::{
    ConfigArgs, Listeners, ServerConfig, Validate, load_or_exit, shutdown_token_on_signal,
};

/// A service's configuration: loadable, checkable, with defaults and a server section.
pub trait ServiceConfig: Serialize + DeserializeOwned + Validate + Default {
    /// Where the service listens.
    fn server(&self) -> &ServerConfig;
    /// Where the service listens, to be changed (e.g. by `selfheal up`'s port plan).
    fn server_mut(&mut self) -> &mut ServerConfig;
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Runs a service binary named `name` to completion. `about` is its `--help` text.
pub fn service_main<C, F, Fut, E>(name: &'static str, about: &'static str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Listeners, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let command = Cli::command().name(name).about(about).after_help(ENV_HELP);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let config: C = load_or_exit(name, &C::default(), &cli.config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry =
            match selfheal_telemetry::init(&selfheal_telemetry::TelemetryConfig::from_env(name)) {
                Ok(guard) => guard,
                Err(error) => {
                    eprintln!("{name}: {error}");
                    return ExitCode::FAILURE;
                }
            };
        let server = config.server();
        let listeners = match Listeners::bind(server.grpc_addr, server.http_addr).await {
            Ok(listeners) => listeners,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match run(config, listeners, shutdown_token_on_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

const ENV_HELP: &str = "\
Settings are layered: built-in defaults, then --config FILE, then SELFHEAL_* environment
variables (SELFHEAL_SERVER__GRPC_ADDR sets server.grpc_addr), then --set KEY=VALUE.
A key no setting has is refused, naming where it came from; --dump-config lists every key.
Traces are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; RUST_LOG filters logs.
Exit codes: 0 stopped cleanly, 1 failed while running, 64 invalid configuration.";
