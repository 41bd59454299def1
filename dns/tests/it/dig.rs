//! Cross-check with `dig` (Debian bind9-dnsutils) when it is installed; skipped otherwise.

use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::support::{TestServer, hello_zone};

fn dig(server: std::net::SocketAddr, args: &[&str]) -> Option<String> {
    let output = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .ok()?;
    assert!(output.status.success(), "{output:?}");
    Some(String::from_utf8(output.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_what_hickory_sees() {
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("dig not installed (Debian bind9-dnsutils): skipping");
        return;
    }
    let server = TestServer::start_workers(hello_zone(), 1).await;
    let addr = server.udp;
    let run = move |args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || dig(addr, &args).unwrap())
    };

    let srv = run(vec![
        "+short",
        "_http._tcp.hello.default.svc.berth.local",
        "SRV",
    ])
    .await
    .unwrap();
    let mut dig_srv: Vec<&str> = srv.lines().collect();
    dig_srv.sort_unstable();
    let ours = server
        .udp("_http._tcp.hello.default.svc.berth.local.", RecordType::SRV)
        .await;
    let mut hickory_srv: Vec<String> = ours.answers.iter().map(|r| r.data.to_string()).collect();
    hickory_srv.sort_unstable();
    assert_eq!(dig_srv, hickory_srv);

    let full = run(vec![
        "+norec",
        "_http._tcp.hello.default.svc.berth.local",
        "SRV",
    ])
    .await
    .unwrap();
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains("flags: qr aa;"), "{full}");
    assert!(
        full.contains("ANSWER: 3, AUTHORITY: 0, ADDITIONAL: 4"),
        "{full}"
    );

    let nx = run(vec!["nope.berth.local", "A"]).await.unwrap();
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("AUTHORITY: 1"), "{nx}");

    let ptr = run(vec!["+short", "-x", "127.0.0.1"]).await.unwrap();
    assert_eq!(ptr.trim(), "hello-a.hello.default.svc.berth.local.");

    let tcp = run(vec!["+tcp", "+short", "hello.default.svc.berth.local", "A"])
        .await
        .unwrap();
    assert_eq!(tcp.trim(), "127.0.0.1");

    let txt = run(vec!["+short", "dns-version.berth.local", "TXT"])
        .await
        .unwrap();
    assert_eq!(txt.trim(), "\"1.1.0\"");
    server.stop().await;
}
