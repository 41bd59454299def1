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
        metrics.contains("berth_api_watch_streams 4"),
        "the agent's 4 informers: {metrics}"
    );

    let bash = stdout(&dev, &["completion", "bash"])?;
    assert!(bash.contains("_berth()") && bash.contains("rollout"));
    Ok(())
}
