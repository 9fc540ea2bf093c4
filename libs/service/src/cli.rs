//! Command-line flags shared by every service binary, and the load-or-exit step of `main`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigSources, ProcessEnv, Validate, load, to_toml};

/// Exit code for bad configuration (`EX_USAGE` from `sysexits.h`), used before any port is bound.
pub const EX_CONFIG: i32 = 64;

/// Configuration flags of a service binary.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Read settings from this TOML file (over the defaults, under the environment).
    #[arg(long, short = 'c', value_name = "FILE", env = "SELFHEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set server.shutdown_grace=5s`; repeatable; wins over all.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// gRPC listen address (shorthand for `--set server.grpc_addr=ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address for /metrics and /healthz (shorthand for `--set server.http_addr=ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub dump_config: bool,
}

impl ConfigArgs {
    /// The command-line layer as `key=value` settings.
    pub fn overrides(&self) -> Vec<String> {
        let mut overrides = Vec::new();
        if let Some(addr) = self.grpc_addr {
            overrides.push(format!("server.grpc_addr={addr}"));
        }
        if let Some(addr) = self.http_addr {
            overrides.push(format!("server.http_addr={addr}"));
        }
        overrides.extend(self.set.iter().cloned());
        overrides
    }
}

/// Loads the configuration of `service` from defaults, `--config`, `SELFHEAL_*` and the
/// command line. Prints it and exits 0 for `--dump-config`; prints every problem and exits
/// with [`EX_CONFIG`] when it is invalid.
pub fn load_or_exit<C>(service: &str, defaults: &C, args: &ConfigArgs) -> C
where
    C: Serialize + DeserializeOwned + Validate,
{
    let sources = ConfigSources {
        file: args.config.as_deref(),
        env_prefix: "SELFHEAL_",
        env: &ProcessEnv,
        overrides: args.overrides(),
        file_table: None,
    };
    let config = match load(defaults, &sources) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{service}: {error}");
            eprintln!(
                "hint: see `{service} --help`; `--dump-config` prints the effective settings"
            );
            std::process::exit(EX_CONFIG);
        }
    };
    if args.dump_config {
        match to_toml(&config) {
            Ok(text) => {
                print!("{text}");
                std::process::exit(0);
            }
            Err(error) => {
                eprintln!("{service}: cannot render the configuration: {error}");
                std::process::exit(EX_CONFIG);
            }
        }
    }
    config
}
