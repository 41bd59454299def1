//! The API over TLS: a client with the CA gets in, one without is told why.

use std::process::Command;

use anyhow::Result;
use berth_tests::{Server, berth_bin, tempfile_dir::TempDir};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

#[test]
fn api_serves_https_to_clients_that_trust_its_ca() -> Result<()> {
    let dir = TempDir::new("berth-tls")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("api.pem"),
        dir.path().join("api.key"),
    );
    std::fs::write(&ca_pem, ca.pem())?;
    std::fs::write(&cert_pem, cert.pem())?;
    std::fs::write(&key_pem, key.serialize_pem())?;

    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap_or_default(),
            "--tls-key",
            key_pem.to_str().unwrap_or_default(),
        ],
    )?;
    let url = format!("https://{}", server.addr);
    let berth = |extra: &[&str]| {
        Command::new(berth_bin())
            .args(["--server", &url, "--token", &server.admin])
            .args(extra)
            .env("BERTH_CONFIG", dir.path().join("none.yaml"))
            .output()
    };
    let ok = berth(&["--ca", ca_pem.to_str().unwrap_or_default(), "get", "nodes"])?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("NAME"));

    let no_ca = berth(&["get", "nodes"])?;
    assert!(!no_ca.status.success());
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("https needs the server's CA certificate")
    );

    // A CA that did not sign the server's certificate: refused by verification.
    let other = CertifiedIssuer::self_signed(
        {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        },
        KeyPair::generate()?,
    )?;
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, other.pem())?;
    let bad = berth(&["--ca", wrong.to_str().unwrap_or_default(), "get", "nodes"])?;
    assert!(!bad.status.success());

    // Plain HTTP to the TLS port gets nothing useful.
    let plain = berth_tests::http(server.addr, "GET", "berth", "/healthz", None);
    assert!(!matches!(plain, Ok((200, _))));
    Ok(())
}
