//! Runs one link of the chain.
//!
//! Environment:
//! - `SERVICE_NAME`: who this link is, e.g. `checkout`, `payment`, `customer` (default
//!   `chain-service`); it names the service in answers and log lines;
//! - `DOWNSTREAM_URL`: the next link, e.g. `http://127.0.0.1:8082`; unset or empty makes this
//!   link the leaf, which answers from its own customer profiles;
//! - `DOWNSTREAM_TIMEOUT_MS`: how long a call to the next link may take (default 2000);
//! - `PORT` (default 8080; 0 picks a free port) and `BIND` (default `127.0.0.1`).

use std::process::ExitCode;
use std::time::Duration;

use chain_service::Config;
use chain_service::downstream::Downstream;
use tokio::net::TcpListener;

/// How long a call to the next link may take when `DOWNSTREAM_TIMEOUT_MS` is not set.
const DEFAULT_DOWNSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chain-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let port = match std::env::var("PORT") {
        Ok(raw) => raw
            .parse::<u16>()
            .map_err(|_| format!("invalid PORT {raw:?}"))?,
        Err(_) => 8080,
    };
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let service = std::env::var("SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "chain-service".to_owned());
    let timeout = match std::env::var("DOWNSTREAM_TIMEOUT_MS") {
        Ok(raw) => raw
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("invalid DOWNSTREAM_TIMEOUT_MS {raw:?}"))?,
        Err(_) => DEFAULT_DOWNSTREAM_TIMEOUT,
    };
    let downstream = match std::env::var("DOWNSTREAM_URL") {
        Ok(url) if !url.trim().is_empty() => Some(
            Downstream::parse(url.trim(), timeout)
                .map_err(|e| format!("invalid DOWNSTREAM_URL {url:?}: {e}"))?,
        ),
        _ => None,
    };

    let listener = TcpListener::bind((bind.as_str(), port))
        .await
        .map_err(|e| format!("cannot bind {bind}:{port}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| format!("{bind}:{port}"), |a| a.to_string());
    let calls = downstream.as_ref().map_or_else(
        || "no downstream (leaf)".to_owned(),
        |d| format!("downstream {}", d.url()),
    );
    eprintln!(
        "{service} (chain-service {}) listening on http://{addr} (pid {}), {calls}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );

    let app = chain_service::app(Config {
        service,
        downstream,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM so in-flight requests can finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
