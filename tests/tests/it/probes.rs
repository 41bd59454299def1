//! Liveness: an instance whose liveness check fails is restarted, and says why.

use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Dev, wait_for};

#[test]
fn failing_liveness_exec_probe_restarts_the_instance() -> Result<()> {
    let dev = Dev::start(&[])?;
    let marker = dev.data_dir.path().join("unhealthy");
    let manifest = format!(
        r#"kind: App
metadata: {{name: live}}
spec:
  replicas: 1
  template:
    command: berth
    args: [hello-server]
    ports: [{{name: http}}]
    readinessProbe: {{http: {{path: /healthz, port: http}}}}
    livenessProbe:
      exec: {{command: [test, "!", "-e", "{}"]}}
      periodSeconds: 1
      failureThreshold: 2
"#,
        marker.display()
    );
    let file = dev.data_dir.path().join("live.yaml");
    std::fs::write(&file, manifest)?;
    let out = dev.cli(&["apply", "-f", file.to_str().context("path")?])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = |dev: &Dev| -> Option<serde_json::Value> {
        let out = dev.cli(&["get", "instances", "-o", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0).map(|i| i["status"].clone())
    };
    wait_for(Duration::from_secs(30), "ready", || {
        status(&dev).filter(|s| s["state"] == "ready").map(|_| ())
    })?;
    // Healthy for a few periods: no restart.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status(&dev).context("status")?["restarts"], 0);

    std::fs::write(&marker, "")?;
    let s = wait_for(Duration::from_secs(15), "restarted by liveness", || {
        status(&dev).filter(|s| s["restarts"].as_u64() >= Some(1))
    })?;
    println!("{s}");
    let events = String::from_utf8(dev.cli(&["events"])?.stdout)?;
    assert!(
        events.contains("liveness probe failed 2 times in a row"),
        "{events}"
    );
    std::fs::remove_file(&marker)?;
    wait_for(Duration::from_secs(15), "ready again", || {
        status(&dev).filter(|s| s["state"] == "ready").map(|_| ())
    })?;
    Ok(())
}
