//! The `berth` binary's command line, without a server: what fails must say why.
//!
//! Being an integration test of this package, it also makes `cargo test --workspace` build the
//! `berth` binary that the end-to-end tests in `tests/` start.

use std::process::Command;

fn berth(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_SERVER", "http://127.0.0.1:9")
        .env("BERTH_CONFIG", "/nonexistent/berth-config.yaml")
        .output()
        .expect("run berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apply_names_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("web.yaml");
    std::fs::write(
        &f,
        "kind: Route\nmetadata: {name: web}\nspec: {hosts: [web.localhost], rules: [{path: nope, service: web, port: http}]}\n",
    )
    .unwrap();
    let (ok, _, err) = berth(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("web.yaml: document 1: Route default/web: spec.rules[0].path: \"nope\" must start with '/'"), "{err}");
}

#[test]
fn unknown_kind_and_unreachable_server_are_explained() {
    let (ok, _, err) = berth(&["get", "gadgets"]);
    assert!(!ok);
    assert!(err.contains("unknown kind \"gadgets\""), "{err}");
    let (ok, _, err) = berth(&["get", "instances"]);
    assert!(!ok);
    assert!(err.contains("cannot reach the berth API"), "{err}");
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, out, _) = berth(&["--help"]);
    assert!(ok);
    for cmd in [
        "dev",
        "server",
        "agent",
        "apply",
        "get",
        "delete",
        "scale",
        "hello-server",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
}
