//! The API's tokens and roles, over a real `berth server`.

use anyhow::Result;
use berth_tests::{Server, http, http_with_token, tempfile_dir::TempDir};

const SERVICE: &str = r#"{"kind":"Service","metadata":{"name":"web"},"spec":{"app":"web","ports":[{"name":"http","port":80}]}}"#;

#[test]
fn tokens_and_roles() -> Result<()> {
    let dir = TempDir::new("berth-auth")?;
    let server = Server::start(dir.path())?;
    let a = server.addr;
    let call = |token: Option<&str>, method: &str, path: &str, body: Option<&str>| {
        http_with_token(a, method, "berth", path, body, token)
    };

    // No token, a bad token: 401 with the reason; health needs none.
    let (status, body) = http(a, "GET", "berth", "/api/v1/apps", None)?;
    assert_eq!(status, 401);
    assert!(body.contains("no bearer token"), "{body}");
    let (status, body) = call(Some("0123456789abcdef-wrong"), "GET", "/api/v1/apps", None)?;
    assert_eq!(
        (status, body.contains("unknown token")),
        (401, true),
        "{body}"
    );
    assert_eq!(http(a, "GET", "berth", "/healthz", None)?.0, 200);

    let viewer = server.token("ci-viewer", "viewer", None)?;
    let operator = server.token("deployer", "operator", None)?;
    let node_a = server.token("node-a", "node", Some("a"))?;

    // Viewer reads, does not write.
    assert_eq!(call(Some(&viewer), "GET", "/api/v1/apps", None)?.0, 200);
    let (status, body) = call(Some(&viewer), "POST", "/api/v1/apply", Some(SERVICE))?;
    assert_eq!(status, 403);
    assert!(
        body.contains(r#"token \"ci-viewer\" (role viewer) may not POST /api/v1/apply"#),
        "{body}"
    );

    // Operator deploys, but does not manage tokens or nodes.
    assert_eq!(
        call(Some(&operator), "POST", "/api/v1/apply", Some(SERVICE))?.0,
        200
    );
    let (status, _) = call(
        Some(&operator),
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"x","role":"admin"}"#),
    )?;
    assert_eq!(status, 403);
    let (status, _) = call(Some(&operator), "DELETE", "/api/v1/nodes/a", None)?;
    assert_eq!(status, 403);

    // A node token changes its own node only, and cannot deploy.
    let node = |name: &str| {
        format!(
            r#"{{"metadata":{{"name":"{name}"}},"spec":{{"address":"127.0.0.1","cpuMillis":1000,"memoryBytes":1073741824,"maxInstances":10}}}}"#
        )
    };
    assert_eq!(
        call(Some(&node_a), "PUT", "/api/v1/nodes/a", Some(&node("a")))?.0,
        200
    );
    assert_eq!(
        call(
            Some(&node_a),
            "PUT",
            "/api/v1/nodes/a/status",
            Some(r#"{"ready":true}"#)
        )?
        .0,
        200
    );
    let (status, body) = call(Some(&node_a), "PUT", "/api/v1/nodes/b", Some(&node("b")))?;
    assert_eq!(status, 403);
    assert!(body.contains("changes only its own node"), "{body}");
    assert_eq!(
        call(Some(&node_a), "POST", "/api/v1/apply", Some(SERVICE))?.0,
        403
    );
    // ... and reports only instances placed on it.
    let (status, body) = call(
        Some(&node_a),
        "PUT",
        "/api/v1/namespaces/default/instances/not-mine/status",
        Some(r#"{"state":"ready"}"#),
    )?;
    assert_eq!(status, 403);
    assert!(body.contains("only instances placed on its node"), "{body}");
    // The heartbeat is stamped by the server's clock.
    let (_, body) = server.api("GET", "/api/v1/nodes/a", None)?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        v["status"]["heartbeatAt"].as_u64().unwrap_or(0) > 1_700_000_000,
        "{v}"
    );
    // Secrets: viewers see the keys, not the values.
    let secret = r#"{"kind":"Secret","metadata":{"name":"db"},"type":"opaque","data":{"password":"hunter2hunter2"}}"#;
    assert_eq!(
        call(Some(&operator), "POST", "/api/v1/apply", Some(secret))?.0,
        200
    );
    let (_, body) = call(
        Some(&viewer),
        "GET",
        "/api/v1/namespaces/default/secrets/db",
        None,
    )?;
    assert!(
        !body.contains("hunter2") && body.contains("<redacted: 14 bytes>"),
        "{body}"
    );
    let (_, body) = call(Some(&viewer), "GET", "/api/v1/secrets", None)?;
    assert!(!body.contains("hunter2"), "{body}");
    let (_, body) = server.api("GET", "/api/v1/namespaces/default/secrets/db", None)?;
    assert!(body.contains("hunter2hunter2"), "{body}");
    let bad_tls = r#"{"kind":"Secret","metadata":{"name":"cert"},"type":"tls","data":{"tls.crt":"nope","tls.key":"nope"}}"#;
    let (status, body) = server.api("POST", "/api/v1/apply", Some(bad_tls))?;
    assert_eq!(status, 422);
    assert!(body.contains("data.tls.crt: is not PEM"), "{body}");

    // Token names are unique.
    let (status, body) = server.api(
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"deployer","role":"viewer"}"#),
    )?;
    assert_eq!(status, 422);
    assert!(body.contains("exists already"), "{body}");
    Ok(())
}
