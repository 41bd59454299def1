//! The commands over the recording fake kernel.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::kernel::fake::FakeKernel;

struct T {
    dir: tempfile::TempDir,
    k: FakeKernel,
}

impl T {
    fn new() -> T {
        let k = FakeKernel::default();
        for id in ["c1", "a", "b", "c", "d", "e", "f"] {
            k.netns
                .borrow_mut()
                .insert(PathBuf::from(format!("/run/netns/{id}")));
        }
        T {
            dir: tempfile::tempdir().unwrap(),
            k,
        }
    }

    fn conf(&self, version: &str, extra: Value) -> Vec<u8> {
        let mut c = json!({
            "cniVersion": version, "name": "net", "type": "berth-cni", "ipMasq": true,
            "ipam": {"type": "berth", "ranges": [[{"subnet": "10.1.0.0/29"}], [{"subnet": "fd01::/120"}]],
                     "dataDir": self.dir.path()},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::to_vec(&c).unwrap()
    }

    fn run(&self, cmd: &str, id: &str, stdin: &[u8]) -> Result<Option<String>, CniError> {
        let env = Env::from_lookup(|k| match k {
            "CNI_COMMAND" => Some(cmd.into()),
            "CNI_CONTAINERID" => Some(id.into()),
            "CNI_NETNS" => Some(format!("/run/netns/{id}")),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/nonexistent".into()),
            _ => None,
        })?;
        run(&env, stdin, &self.k)
    }
}

#[test]
fn add_check_del_in_every_version() {
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let t = T::new();
        let out = t.run("ADD", "c1", &t.conf(v, json!({}))).unwrap().unwrap();
        let res: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(res["cniVersion"], v);
        assert_eq!(res["ips"][0]["address"], "10.1.0.2/29");
        assert_eq!(res["ips"][1]["address"], "fd01::2/120");
        assert_eq!(res["interfaces"][2]["sandbox"], "/run/netns/c1");
        assert_eq!(
            res["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"})
        );
        assert_eq!(t.k.masq.borrow().len(), 2);
        let check = t.run("CHECK", "c1", &t.conf(v, json!({"prevResult": res})));
        if v == "0.3.1" {
            assert_eq!(check.unwrap_err().code, error::INCOMPATIBLE_VERSION);
        } else {
            check.unwrap();
        }
        t.run("DEL", "c1", &t.conf(v, json!({"prevResult": res})))
            .unwrap();
        t.run("DEL", "c1", &t.conf(v, json!({}))).unwrap();
        assert!(t.k.host.borrow().keys().all(|n| !n.starts_with("bv")));
        assert!(t.k.containers.borrow().is_empty());
        assert!(t.k.masq.borrow().is_empty());
    }
}

#[test]
fn check_reports_drift() {
    let t = T::new();
    let out = t
        .run("ADD", "c1", &t.conf("1.0.0", json!({})))
        .unwrap()
        .unwrap();
    let res: Value = serde_json::from_str(&out).unwrap();
    t.k.containers.borrow_mut().values_mut().for_each(|c| {
        c.addresses.pop();
    });
    let e = t
        .run("CHECK", "c1", &t.conf("1.0.0", json!({"prevResult": res})))
        .unwrap_err();
    assert_eq!(e.code, error::DRIFT);
    assert!(e.details.contains("lacks address fd01::2/120"), "{e}");
    let e = t
        .run("CHECK", "c1", &t.conf("1.0.0", json!({})))
        .unwrap_err();
    assert_eq!(e.code, error::INVALID_CONFIG);
}

#[test]
fn a_failed_add_undoes_its_reservation_and_veth() {
    let t = T::new();
    *t.k.fail.borrow_mut() = Some("setup_container");
    let e = t.run("ADD", "c1", &t.conf("1.1.0", json!({}))).unwrap_err();
    assert_eq!(e.code, error::KERNEL);
    assert!(t.k.host.borrow().keys().all(|n| !n.starts_with("bv")));
    let st = Store::new(t.dir.path(), "net").lock().unwrap().state;
    assert!(st.reservations.is_empty());
}

#[test]
fn a_second_add_of_the_same_interface_is_refused_untouched() {
    let t = T::new();
    t.run("ADD", "c1", &t.conf("1.1.0", json!({}))).unwrap();
    let e = t.run("ADD", "c1", &t.conf("1.1.0", json!({}))).unwrap_err();
    assert_eq!(e.code, error::INTERFACE_EXISTS);
    assert_eq!(
        t.k.host
            .borrow()
            .keys()
            .filter(|n| n.starts_with("bv"))
            .count(),
        1
    );
    let st = Store::new(t.dir.path(), "net").lock().unwrap().state;
    assert_eq!(st.reservations.len(), 1);
}

#[test]
fn gc_frees_what_is_not_valid_and_status_reports_exhaustion() {
    let t = T::new();
    for id in ["a", "b", "c", "d", "e"] {
        t.run("ADD", id, &t.conf("1.1.0", json!({}))).unwrap();
    }
    // /29: .2-.6 usable once the gateway is skipped; five reservations exhaust it.
    let e = t
        .run("STATUS", "", &t.conf("1.1.0", json!({})))
        .unwrap_err();
    assert_eq!(e.code, error::NOT_AVAILABLE);
    let e = t.run("ADD", "f", &t.conf("1.1.0", json!({}))).unwrap_err();
    assert_eq!(e.code, error::EXHAUSTED);
    let keep = json!([{"containerID": "b", "ifname": "eth0"}]);
    t.run(
        "GC",
        "",
        &t.conf("1.1.0", json!({"cni.dev/valid-attachments": keep})),
    )
    .unwrap();
    let bv: Vec<String> =
        t.k.host
            .borrow()
            .keys()
            .filter(|n| n.starts_with("bv"))
            .cloned()
            .collect();
    assert_eq!(bv, vec![host_veth_name("net", "b", "eth0")]);
    let st = Store::new(t.dir.path(), "net").lock().unwrap().state;
    assert_eq!(st.reservations.len(), 1);
    assert_eq!(t.k.masq.borrow().len(), 2);
    t.run("STATUS", "", &t.conf("1.1.0", json!({}))).unwrap();
    let e = t.run("GC", "", &t.conf("1.1.0", json!({}))).unwrap_err();
    assert_eq!(e.code, error::INVALID_CONFIG);
    let e = t
        .run(
            "GC",
            "",
            &t.conf("1.0.0", json!({"cni.dev/valid-attachments": []})),
        )
        .unwrap_err();
    assert_eq!(e.code, error::INCOMPATIBLE_VERSION);
}

#[test]
fn version_answers_in_the_version_asked() {
    let v: Value = serde_json::from_str(&version(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let v: Value = serde_json::from_str(&version(b"")).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn host_names_are_stable_and_short() {
    let n = host_veth_name("net", "c1", "eth0");
    assert_eq!(n.len(), 14);
    assert_eq!(n, host_veth_name("net", "c1", "eth0"));
    assert_ne!(n, host_veth_name("net", "c1", "eth1"));
    assert_eq!(bridge_mac("berth0")[0], 0x02);
}

#[test]
fn a_busy_store_is_try_again() {
    let e = store_error(StoreError::Busy(PathBuf::from("/x/lock")));
    assert_eq!(e.code, error::TRY_AGAIN);
    assert!(e.details.contains("/x/lock"), "{e}");
}
