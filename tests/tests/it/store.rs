//! The store keeps every acknowledged write through a kill -9 of the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Server, http_with_token, tempfile_dir::TempDir};

fn route(i: usize) -> String {
    format!(
        r#"{{"kind":"Route","metadata":{{"name":"r{i}","namespace":"default"}},"spec":{{"hosts":["r{i}.example"],"rules":[{{"path":"/","service":"s","port":"http"}}]}}}}"#
    )
}

#[test]
fn every_acknowledged_write_survives_kill_9() -> Result<()> {
    let dir = TempDir::new("berth-kill9")?;
    let mut server = Server::start(dir.path())?;
    let addr = server.addr;
    let admin = server.admin.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    // Up to 1,000 sequential writes, each acknowledged (200) before the next; the server is
    // killed in the middle of them.
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..1000 {
            if writer_stop.load(Ordering::Relaxed) {
                break;
            }
            match http_with_token(
                addr,
                "POST",
                "berth",
                "/api/v1/apply",
                Some(&route(i)),
                Some(&admin),
            ) {
                Ok((200, _)) => acknowledged.push(i),
                // The kill lands mid-request: that write was never acknowledged.
                _ => break,
            }
        }
        acknowledged
    });
    // Kill while writes are in flight: after the first 100 or so.
    let listed = |server: &Server| -> Result<usize> {
        let (status, body) = server.api("GET", "/api/v1/routes", None)?;
        anyhow::ensure!(status == 200, "list: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["items"].as_array().context("items")?.len())
    };
    berth_tests::wait_for(Duration::from_secs(60), "100 writes", || {
        (listed(&server).ok()? >= 100).then_some(())
    })?;
    server.kill9()?;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    assert!(acknowledged.len() >= 100, "{}", acknowledged.len());
    println!("{} writes acknowledged before kill -9", acknowledged.len());

    let server = Server::start(dir.path())?;
    let (status, body) = server.api("GET", "/api/v1/routes", None)?;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let names: std::collections::BTreeSet<String> = v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for i in &acknowledged {
        assert!(
            names.contains(&format!("r{i}")),
            "acknowledged write r{i} lost"
        );
    }
    // The revision survived too: a new write gets a higher one than any stored.
    let max_rev = v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|o| o["metadata"]["revision"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(v["revision"].as_u64().unwrap_or(0) >= max_rev);
    Ok(())
}
