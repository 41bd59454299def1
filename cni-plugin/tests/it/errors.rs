//! Each bad configuration and environment gets the right error code, on stdout, with a
//! non-zero exit.

use berth_cni::error::*;
use serde_json::json;

use crate::netns::{Net, Netns};

fn run(net: &Net, env: &[(&str, &str)], stdin: &str) -> Option<u32> {
    let binary = net.exec.find("berth-cni").unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match net.exec.run(&binary, &env, stdin.as_bytes()) {
        Ok(_) => None,
        Err(e) => e.code(),
    }
}

/// What is wrong, the environment, stdin, and the code expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u32);

#[test]
fn bad_config_and_environment_get_their_codes() {
    let net = Net::new("err");
    let c = Netns::new("errc");
    let netns = c.path().display().to_string();
    let good = net.plugin(
        &["10.210.0.0/24"],
        json!({"cniVersion": "1.1.0", "name": net.name}),
    );
    let good_s = good.to_string();
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "e1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let without = |var: &str| {
        add.iter()
            .copied()
            .filter(|(k, _)| *k != var)
            .collect::<Vec<_>>()
    };
    let with = |var: &'static str, v: &'static str| {
        let mut e = without(var);
        e.push((var, v));
        e
    };
    let mut bad_mtu = good.clone();
    bad_mtu["mtu"] = json!(10);
    let mut bad_ver = good.clone();
    bad_ver["cniVersion"] = json!("0.2.0");
    let mut bad_subnet = good.clone();
    bad_subnet["ipam"]["ranges"] = json!([[{"subnet": "10.210.0.0/40"}]]);
    let mut no_ipam = good.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    let mut bad_ip = good.clone();
    bad_ip["runtimeConfig"] = json!({"ips": ["10.99.0.1"]});
    let cases: Vec<Case<'_>> = vec![
        (
            "no CNI_COMMAND",
            without("CNI_COMMAND"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "bad CNI_COMMAND",
            with("CNI_COMMAND", "FROB"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "no CNI_CONTAINERID",
            without("CNI_CONTAINERID"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "bad CNI_IFNAME",
            with("CNI_IFNAME", "a/b"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "no CNI_NETNS",
            without("CNI_NETNS"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "no CNI_PATH",
            without("CNI_PATH"),
            good_s.clone(),
            INVALID_ENVIRONMENT,
        ),
        (
            "missing netns",
            with("CNI_NETNS", "/run/netns/bcni-does-not-exist"),
            good_s.clone(),
            UNKNOWN_CONTAINER,
        ),
        ("bad JSON", add.to_vec(), "{not json".into(), DECODE),
        (
            "unknown version",
            add.to_vec(),
            bad_ver.to_string(),
            INCOMPATIBLE_VERSION,
        ),
        ("bad mtu", add.to_vec(), bad_mtu.to_string(), INVALID_CONFIG),
        (
            "bad subnet",
            add.to_vec(),
            bad_subnet.to_string(),
            INVALID_CONFIG,
        ),
        ("no ipam", add.to_vec(), no_ipam.to_string(), INVALID_CONFIG),
        (
            "requested ip outside",
            add.to_vec(),
            bad_ip.to_string(),
            INVALID_CONFIG,
        ),
        (
            "existing interface",
            with("CNI_IFNAME", "lo"),
            good_s.clone(),
            INTERFACE_EXISTS,
        ),
        (
            "CHECK without prevResult",
            with("CNI_COMMAND", "CHECK"),
            good_s.clone(),
            INVALID_CONFIG,
        ),
    ];
    for (what, env, stdin, code) in cases {
        assert_eq!(run(&net, &env, &stdin), Some(code), "{what}");
    }
    // Nothing was left by the failed ADDs.
    assert_eq!(net.reservations(), 0);
    assert!(net.host_veths().is_empty());
    // The error object is the spec's, in the version asked.
    let binary = net.exec.find("berth-cni").unwrap();
    let mut child = net
        .exec
        .spawn(&binary, &[("CNI_COMMAND".into(), "ADD".into())])
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), br#"{"cniVersion":"0.4.0"}"#).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["code"], 4);
    assert!(
        v["details"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{v}"
    );
}

#[test]
fn status_reports_exhaustion() {
    let net = Net::new("exh");
    // A /30 holds two hosts; the gateway takes one.
    let list = net.list("1.1.0", vec![net.plugin(&["10.211.0.0/30"], json!({}))]);
    net.exec.status(&list).unwrap();
    let c = Netns::new("exhc");
    let rt = net.rt("x1", &c);
    let res = net.exec.add(&list, &rt).unwrap();
    let e = net.exec.status(&list).unwrap_err();
    assert_eq!(e.code(), Some(NOT_AVAILABLE), "{e}");
    let c2 = Netns::new("exhc2");
    let e = net.exec.add(&list, &net.rt("x2", &c2)).unwrap_err();
    assert_eq!(e.code(), Some(EXHAUSTED), "{e}");
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    net.exec.status(&list).unwrap();
}
