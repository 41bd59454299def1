//! Seeing what berth does: label selectors, the event stream, metrics, shell completion.

use std::time::Duration;

use anyhow::Result;
use berth_tests::{Dev, http_with_token, wait_for};

fn stdout(dev: &Dev, args: &[&str]) -> Result<String> {
    let out = dev.cli(args)?;
    anyhow::ensure!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn selectors_events_metrics_and_completion() -> Result<()> {
    let dev = Dev::start(&["-f", "examples/hello.yaml"])?;
    wait_for(Duration::from_secs(30), "3 ready", || {
        let t = stdout(&dev, &["get", "instances", "-l", "app=hello"]).ok()?;
        (t.lines().filter(|l| l.contains(" ready ")).count() == 3).then_some(())
    })?;
    let none = stdout(&dev, &["get", "instances", "-l", "app=other"])?;
    assert_eq!(none.lines().count(), 1, "header only: {none}");
    let bad = dev.cli(&["get", "instances", "-l", "a b"])?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a label key"));

    let events = wait_for(Duration::from_secs(10), "rollout complete event", || {
        let e = stdout(&dev, &["events"]).ok()?;
        e.contains("RolloutComplete").then_some(e)
    })?;
    println!("{events}");
    for reason in [
        "AppCreated",
        "ServiceCreated",
        "NodeRegistered",
        "InstanceScheduled",
        "InstanceReady",
    ] {
        assert!(events.contains(reason), "{reason} missing:\n{events}");
    }
    assert_eq!(events.matches("InstanceReady").count(), 3);

    let config = std::fs::read_to_string(dev.data_dir.path().join("cli.yaml"))?;
    let token = config
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(str::trim)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {config}"))?;
    let api: std::net::SocketAddr = dev.api.trim_start_matches("http://").parse()?;
    let (status, metrics) = http_with_token(api, "GET", "berth", "/metrics", None, Some(&token))?;
    assert_eq!(status, 200);
    assert!(metrics.contains("berth_api_requests_total{"), "{metrics}");
    assert!(metrics.contains("berth_api_store_revision "), "{metrics}");
    assert!(
        metrics.contains("berth_api_watch_streams 5"),
        "the agent's 5 informers (instances, services, endpoints, routes, secrets): {metrics}"
    );

    // Logs: the instance's own output, through the API from its node's agent.
    let names = stdout(&dev, &["get", "instances", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&names)?;
    let first = v[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let log = stdout(&dev, &["logs", &first])?;
    assert!(
        log.contains("hello-server listening") && log.contains(&first),
        "{log}"
    );
    let tail = stdout(&dev, &["logs", &first, "--tail", "1"])?;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let missing = dev.cli(&["logs", "nope"])?;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("instance default/nope not found"));
    // The agent serves logs only to its node's token.
    let nodes: serde_json::Value =
        serde_json::from_str(&stdout(&dev, &["get", "nodes", "-o", "json"])?)?;
    let port = nodes[0]["spec"]["logPort"].as_u64().unwrap_or(0) as u16;
    let agent = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _) = http_with_token(
        agent,
        "GET",
        "x",
        &format!("/logs/default/{first}"),
        None,
        Some(&token),
    )?;
    assert_eq!(status, 401, "the admin token is not the node's");

    let d = stdout(&dev, &["describe", "app", "hello"])?;
    assert!(
        d.contains("kind: App") && d.contains("Instances:") && d.contains("RolloutComplete"),
        "{d}"
    );
    assert_eq!(d.matches("InstanceReady").count(), 3, "{d}");

    let bash = stdout(&dev, &["completion", "bash"])?;
    assert!(bash.contains("_berth()") && bash.contains("rollout"));
    Ok(())
}
