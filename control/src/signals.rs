//! Waiting for the signals that end a process.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // Without signal handlers the process still ends by the default action.
        _ => std::future::pending().await,
    }
}
