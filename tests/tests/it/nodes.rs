//! A node that stops reporting: its instances leave the data plane, then move to another node.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_tests::{Agent, Server, http_get, tempfile_dir::TempDir, wait_for};

/// Instance name -> node, of ready instances, from the API.
fn ready_by_node(server: &Server) -> Result<Vec<(String, String)>> {
    let (status, body) = server.api("GET", "/api/v1/instances", None)?;
    anyhow::ensure!(status == 200, "{status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|i| i["status"]["state"] == "ready" && i["spec"]["stop"] != true)
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                i["spec"]["node"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

/// What 6 requests through a node's proxy were answered with (round robin over 3 covers all).
fn served(ingress: std::net::SocketAddr) -> Option<BTreeSet<String>> {
    (0..6)
        .map(|_| {
            http_get(ingress, "hello.localhost", "/")
                .ok()
                .map(|(_, body)| body)
        })
        .collect()
}

#[test]
fn instances_of_a_lost_node_move_to_the_others() -> Result<()> {
    let dir = TempDir::new("berth-nodes")?;
    let server = Server::start_with(
        dir.path(),
        &["--node-lease-seconds", "2", "--node-eviction-seconds", "2"],
    )?;
    let ta = server.token("node-a", "node", Some("node-a"))?;
    let tb = server.token("node-b", "node", Some("node-b"))?;
    let mut a = Agent::start(server.addr, &ta, "node-a", &["--heartbeat-seconds", "1"])?;
    let b = Agent::start(server.addr, &tb, "node-b", &["--heartbeat-seconds", "1"])?;
    // Both nodes registered before anything is placed, so that spreading has two to use.
    wait_for(Duration::from_secs(30), "both nodes ready", || {
        let (_, body) = server.api("GET", "/api/v1/nodes", None).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let ready = v["items"]
            .as_array()?
            .iter()
            .filter(|n| n["status"]["ready"] == true)
            .count();
        (ready == 2).then_some(())
    })?;
    let manifest = std::fs::read_to_string(berth_tests::repo_root().join("examples/hello.yaml"))?;
    let objects: Vec<serde_json::Value> = manifest
        .split("\n---\n")
        .map(serde_yaml_ng::from_str)
        .collect::<Result<_, _>>()?;
    let (status, body) = server.api(
        "POST",
        "/api/v1/apply",
        Some(&serde_json::to_string(&objects)?),
    )?;
    assert_eq!(status, 200, "{body}");

    let placed = wait_for(
        Duration::from_secs(30),
        "3 ready instances on both nodes",
        || {
            let r = ready_by_node(&server).ok()?;
            (r.len() == 3
                && r.iter().any(|(_, n)| n == "node-a")
                && r.iter().any(|(_, n)| n == "node-b"))
            .then_some(r)
        },
    )?;
    println!("placed: {placed:?}");
    // Every node's proxy serves every instance, wherever it runs.
    let answers = |names: &[(String, String)]| -> BTreeSet<String> {
        names
            .iter()
            .map(|(n, _)| format!("hello from {n}\n"))
            .collect()
    };
    wait_for(
        Duration::from_secs(5),
        "node-b's proxy serves all 3",
        || (served(b.ingress)? == answers(&placed)).then_some(()),
    )?;

    a.kill9()?;
    let killed = Instant::now();
    // After the lease (2 s) the lost node's instances leave node-b's data plane; after the
    // eviction grace (2 s more) they are replaced on node-b.
    let moved = wait_for(
        Duration::from_secs(30),
        "3 ready instances, all on node-b",
        || {
            let r = ready_by_node(&server).ok()?;
            (r.len() == 3 && r.iter().all(|(_, n)| n == "node-b")).then_some(r)
        },
    )?;
    println!("moved after {:?}: {moved:?}", killed.elapsed());
    // No client errors through the surviving node once endpoints caught up.
    wait_for(
        Duration::from_secs(5),
        "node-b serves the 3 new instances",
        || (served(b.ingress)? == answers(&moved)).then_some(()),
    )?;
    for _ in 0..50 {
        let (status, body) = http_get(b.ingress, "hello.localhost", "/")?;
        assert_eq!(status, 200, "{body}");
    }
    let (_, body) = server.api("GET", "/api/v1/nodes/node-a", None)?;
    let node: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(node["status"]["ready"], false, "{node}");
    Ok(())
}
