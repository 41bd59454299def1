//! Runs the proxy from a config file on one thread, as `bench/proxy.sh` compares it with
//! HAProxy and nginx (each with one worker).
//!
//! `cargo run --release -p berth-proxy --example bench_proxy -- proxy.yaml`

use std::path::PathBuf;

/// As the `berth` binary, which runs this proxy.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: bench_proxy CONFIG_FILE")?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        berth_proxy::run_from_file(&path, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
        Ok(())
    })
}
