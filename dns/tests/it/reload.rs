//! `berth dns --zone FILE`: serving a zone file, reloading it on SIGHUP, keeping the old zone
//! when the new file is bad.

use std::time::{Duration, Instant};

use berth_dns::{DnsServer, RunError, load_zone_file, run_listeners_from_file};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::sync::oneshot;

use crate::support::{STEP, query, udp_exchange};

const V1: &str =
    "origin: cluster.test\nservices:\n  - name: one\n    namespace: default\n    vip: 10.96.0.1\n";
const V2: &str = r#"{"origin": "cluster.test", "services": [{"name": "two", "namespace": "default", "vip": "10.96.0.2"}]}"#;

async fn ask(server: std::net::SocketAddr, name: &str) -> Message {
    Message::from_vec(&udp_exchange(server, &query(name, RecordType::A, false)).await).unwrap()
}

/// Polls until `name` gets `rcode`, within STEP.
async fn wait_for(server: std::net::SocketAddr, name: &str, rcode: ResponseCode) {
    let start = Instant::now();
    loop {
        if ask(server, name).await.metadata.response_code == rcode {
            return;
        }
        assert!(start.elapsed() < STEP, "{name} never got {rcode}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_zone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.yaml");
    std::fs::write(&path, V1).unwrap();
    let listeners = DnsServer::bind(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let addr = listeners.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let path = path.clone();
        async move {
            run_listeners_from_file(&path, listeners, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    wait_for(addr, "one.default.svc.cluster.test.", ResponseCode::NoError).await;

    // A bad file: logged, the zone served stays.
    std::fs::write(&path, "origin: [not a string").unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = ask(addr, "one.default.svc.cluster.test.").await;
    assert_eq!(kept.metadata.response_code, ResponseCode::NoError);

    // A good one (JSON is YAML too): swapped in.
    std::fs::write(&path, V2).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(addr, "two.default.svc.cluster.test.", ResponseCode::NoError).await;
    wait_for(
        addr,
        "one.default.svc.cluster.test.",
        ResponseCode::NXDomain,
    )
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(STEP, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn zone_file_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("zone.json");
    std::fs::write(&json, r#"{"origin": "a.b", "ttl": "five"}"#).unwrap();
    let error = load_zone_file(&json).unwrap_err();
    assert!(matches!(error, RunError::Parse { .. }));
    let text = error.to_string();
    assert!(text.contains("zone.json") && text.contains("ttl"), "{text}");

    let yaml = dir.path().join("zone.yaml");
    std::fs::write(
        &yaml,
        "services:\n  - name: x\n    namespace: y\n    colour: red\n",
    )
    .unwrap();
    let text = load_zone_file(&yaml).unwrap_err().to_string();
    assert!(
        text.contains("zone.yaml") && text.contains("colour"),
        "{text}"
    );

    let missing = load_zone_file(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(matches!(missing, RunError::Read { .. }), "{missing}");
}
