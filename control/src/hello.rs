//! `berth hello-server`: the example app. A tiny HTTP server that answers with its instance
//! name, so that a newcomer sees which instance served each request. No python or busybox needed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::http_util::{respond, serve};

/// The address to listen on: the flag, else `HOST:PORT0` as the agent passes them.
pub fn listen_addr(flag: Option<SocketAddr>) -> Result<SocketAddr> {
    if let Some(a) = flag {
        return Ok(a);
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT0")
        .or_else(|_| std::env::var("PORT"))
        .context("no --listen and no PORT0 in the environment")?;
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| format!("HOST={host} PORT0={port} is not an address"))
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(listen: SocketAddr) -> Result<()> {
    let name = std::env::var("BERTH_INSTANCE").unwrap_or_else(|_| "hello".to_owned());
    // Lets a rollout be seen from the outside: change it and every answer changes.
    let greeting = std::env::var("HELLO_GREETING").unwrap_or_else(|_| "hello".to_owned());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        stop.cancel();
    });
    tracing::info!(%listen, instance = %name, "hello-server listening");
    let body = format!("{greeting} from {name}\n");
    serve(
        listener,
        move |req| {
            let body = body.clone();
            async move {
                if req.uri().path() == "/healthz" {
                    respond(StatusCode::OK, "text/plain", "ok\n")
                } else {
                    respond(StatusCode::OK, "text/plain", body)
                }
            }
        },
        shutdown,
        Duration::from_secs(5),
    )
    .await;
    Ok(())
}
