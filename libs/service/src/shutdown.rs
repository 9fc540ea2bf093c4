//! Turning SIGINT/SIGTERM into a cancellation token.

use tokio_util::sync::CancellationToken;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn ctrl_c_or_sigterm() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A token cancelled on the first SIGINT/SIGTERM. A second signal exits at once with 130.
pub fn shutdown_token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        ctrl_c_or_sigterm().await;
        tracing::info!("shutdown requested; finishing in-flight work (signal again to force)");
        cancel.cancel();
        ctrl_c_or_sigterm().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}
