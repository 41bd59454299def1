//! Rolling updates through `berth dev`: no request lost, and undo brings the old revision back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::{Dev, http_get, wait_for};

/// Requests through the proxy, one connection each, until told to stop (at most 120 s):
/// (answers by body, failures).
fn load(dev: &Dev, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    let ingress = dev.ingress;
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match http_get(ingress, "hello.localhost", "/") {
                Ok((200, body)) => ok.push(body.trim().to_owned()),
                Ok((status, body)) => failed.push(format!("{status} {body}")),
                Err(e) => failed.push(format!("{e:#}")),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, failed)
    })
}

fn greetings(answers: &[String]) -> std::collections::BTreeSet<String> {
    answers
        .iter()
        .filter_map(|a| a.split(" from ").next().map(str::to_owned))
        .collect()
}

fn rollout_status(dev: &Dev) -> Result<()> {
    let out = dev.cli(&["rollout", "status", "hello", "--timeout", "60"])?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("rollout status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn rolling_update_under_load_loses_nothing_and_undo_restores() -> Result<()> {
    let dev = Dev::start(&["-f", "examples/hello.yaml"])?;
    wait_for(Duration::from_secs(30), "hello served", || {
        matches!(http_get(dev.ingress, "hello.localhost", "/"), Ok((200, _))).then_some(())
    })?;
    rollout_status(&dev)?;

    let manifest = std::fs::read_to_string(berth_tests::repo_root().join("examples/hello.yaml"))?;
    let v2 = manifest.replace(
        "    args: [hello-server]\n",
        "    args: [hello-server]\n    env:\n      HELLO_GREETING: hi\n",
    );
    assert_ne!(v2, manifest, "the example's template changed shape");
    let v2_path = dev.data_dir.path().join("hello-v2.yaml");
    std::fs::write(&v2_path, v2)?;

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&dev, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let out = dev.cli(&["apply", "-f", v2_path.to_str().context("path")?])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_status(&dev)?;
    // Let the old instances finish draining and stop while the load goes on.
    wait_for(Duration::from_secs(20), "old instances gone", || {
        let out = dev.cli(&["get", "instances"]).ok()?;
        let table = String::from_utf8(out.stdout).ok()?;
        (table.lines().skip(1).count() == 3).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
    println!(
        "rolling update: {} requests answered, {} failed",
        ok.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests lost during the rolling update: {failed:?}"
    );
    assert!(
        ok.len() > 50,
        "the load was too thin to mean anything: {}",
        ok.len()
    );
    assert_eq!(
        greetings(&ok),
        ["hello".to_owned(), "hi".to_owned()].into(),
        "both revisions served"
    );
    assert!(
        ok.last().is_some_and(|a| a.starts_with("hi from")),
        "new revision serves at the end"
    );

    let table = String::from_utf8(dev.cli(&["rollout", "history", "hello"])?.stdout)?;
    println!("{table}");
    assert!(table.contains("2 (current)"), "{table}");

    // Undo: the first template comes back as revision 3.
    let out = dev.cli(&["rollout", "undo", "hello"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_status(&dev)?;
    let answers: Vec<String> = (0..6)
        .map(|_| http_get(dev.ingress, "hello.localhost", "/").map(|(_, b)| b.trim().to_owned()))
        .collect::<Result<_>>()?;
    assert_eq!(
        greetings(&answers),
        ["hello".to_owned()].into(),
        "{answers:?}"
    );
    let table = String::from_utf8(dev.cli(&["rollout", "history", "hello"])?.stdout)?;
    assert!(
        table.contains("3 (current)") && !table.lines().any(|l| l.starts_with("1 ")),
        "{table}"
    );
    let out = dev.cli(&["rollout", "undo", "hello", "--to-revision", "9"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no revision 9 (kept: 2, 3)"));
    Ok(())
}
