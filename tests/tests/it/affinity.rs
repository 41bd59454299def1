//! Service session affinity by client address, through `berth dev`'s proxy.

use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Dev, http_get, repo_root, wait_for};

#[test]
fn client_ip_affinity_keeps_a_client_on_one_instance() -> Result<()> {
    let dev = Dev::start(&[])?;
    let manifest = std::fs::read_to_string(repo_root().join("examples/hello.yaml"))?;
    let sticky = manifest.replace(
        "  app: hello\n  ports:\n",
        "  app: hello\n  sessionAffinity: clientIP\n  ports:\n",
    );
    assert_ne!(sticky, manifest, "the example's service changed shape");
    let file = dev.data_dir.path().join("sticky.yaml");
    std::fs::write(&file, sticky)?;
    let out = dev.cli(&["apply", "-f", file.to_str().context("path")?])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dev.cli(&["rollout", "status", "hello", "--timeout", "60"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // All three instances are in the proxy once this client has been answered by one.
    wait_for(Duration::from_secs(10), "3 endpoints", || {
        let out = dev.cli(&["get", "endpoints", "hello", "-o", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v[0]["addresses"].as_array()?.len() == 3).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (status, body) = http_get(dev.ingress, "hello.localhost", "/")?;
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen.len(), 1, "one client, one instance: {seen:?}");
    Ok(())
}
