//! Watches over the API: resume after a revision; a revision no longer kept is refused with
//! 410 so that the client lists again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_tests::{Server, tempfile_dir::TempDir};

fn route(name: &str) -> String {
    format!(
        r#"{{"kind":"Route","metadata":{{"name":"{name}"}},"spec":{{"hosts":["{name}.example"],"rules":[{{"service":"s","port":"http"}}]}}}}"#
    )
}

/// Opens a watch and reads what arrives until `until` is in it or `limit` passes.
fn watch_until(server: &Server, path: &str, until: &str, limit: Duration) -> Result<String> {
    let mut s = TcpStream::connect(server.addr)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: berth\r\nAuthorization: Bearer {}\r\n\r\n",
        server.admin
    )?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(until) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn watch_resumes_after_a_revision_and_refuses_a_forgotten_one() -> Result<()> {
    let dir = TempDir::new("berth-watch")?;
    let mut server = Server::start(dir.path())?;
    for name in ["a", "b", "c"] {
        let (status, body) = server.api("POST", "/api/v1/apply", Some(&route(name)))?;
        anyhow::ensure!(status == 200, "{body}");
    }
    // Resume after revision 1: b and c, not a.
    let got = watch_until(
        &server,
        "/api/v1/routes?watch=1&revision=1",
        "c.example",
        Duration::from_secs(5),
    )?;
    assert!(
        got.contains("\"name\":\"b\"") && got.contains("\"name\":\"c\""),
        "{got}"
    );
    assert!(!got.contains("\"name\":\"a\""), "{got}");
    // Without a revision: the current objects first, as ADDED.
    let got = watch_until(
        &server,
        "/api/v1/routes?watch=1",
        "c.example",
        Duration::from_secs(5),
    )?;
    assert_eq!(got.matches("\"type\":\"ADDED\"").count(), 3, "{got}");
    // A bad selector or revision is a 400, not a stream.
    let (status, _) = server.api("GET", "/api/v1/routes?watch=1&revision=x", None)?;
    assert_eq!(status, 400);

    // Compare-and-swap through the API: a PUT carrying the revision it read succeeds once;
    // the same stale revision again is a conflict, not a lost update.
    let (_, body) = server.api("GET", "/api/v1/namespaces/default/routes/a", None)?;
    let read: serde_json::Value = serde_json::from_str(&body)?;
    let rev = read["metadata"]["revision"].as_u64().unwrap_or(0);
    let put = |host: &str| {
        format!(
            r#"{{"metadata":{{"name":"a","revision":{rev}}},"spec":{{"hosts":["{host}"],"rules":[{{"service":"s","port":"http"}}]}}}}"#
        )
    };
    let (status, body) = server.api(
        "PUT",
        "/api/v1/namespaces/default/routes/a",
        Some(&put("a2.example")),
    )?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.api(
        "PUT",
        "/api/v1/namespaces/default/routes/a",
        Some(&put("a3.example")),
    )?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(&format!("not {rev}: read it again")),
        "{body}"
    );
    let (_, body) = server.api("GET", "/api/v1/namespaces/default/routes/a", None)?;
    assert!(
        body.contains("a2.example") && !body.contains("a3.example"),
        "{body}"
    );

    // History lives in memory: after a restart, old revisions are gone and the client must
    // list again (Kubernetes answers 410 Gone the same way).
    server.kill9()?;
    let server = Server::start(dir.path())?;
    let (status, body) = server.api("GET", "/api/v1/routes?watch=1&revision=1", None)?;
    assert_eq!(status, 410, "{body}");
    assert!(
        body.contains("too old") && body.contains("list again"),
        "{body}"
    );
    let (status, body) = server.api("GET", "/api/v1/routes", None)?;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body)?;
    let rev = list["revision"].as_u64().unwrap_or(0);
    let got = watch_until(
        &server,
        &format!("/api/v1/routes?watch=1&revision={rev}"),
        "d.example",
        Duration::from_secs(1),
    );
    // Nothing new yet: the stream stays open and quiet (a bookmark at most).
    assert!(!got?.contains("\"name\""));
    Ok(())
}
