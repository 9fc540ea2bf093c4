//! Runs the payment service.
//!
//! Environment: `PORT` (default 8080; 0 picks a free port) and `BIND` (default `127.0.0.1`).

use std::process::ExitCode;

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let port = match std::env::var("PORT") {
        Ok(raw) => match raw.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("payment-service: invalid PORT {raw:?}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => 8080,
    };
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1".to_owned());

    let listener = match TcpListener::bind((bind.as_str(), port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("payment-service: cannot bind {bind}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| format!("{bind}:{port}"), |a| a.to_string());
    eprintln!(
        "payment-service {} listening on http://{addr} (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );

    let served = axum::serve(listener, payment_service::app())
        .with_graceful_shutdown(shutdown_signal())
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payment-service: server error: {e}");
            ExitCode::FAILURE
        }
    }
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
