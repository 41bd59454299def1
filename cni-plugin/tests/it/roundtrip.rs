//! Every operation in every supported version, against the real kernel.

use serde_json::json;

use crate::netns::{Net, Netns, addr};

#[test]
fn every_operation_in_every_version() {
    let net = Net::new("rt");
    for (n, v) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let c = Netns::new("rtc");
        let list = net.list(
            v,
            vec![net.plugin(&["10.201.0.0/24", "fd20:1::/64"], json!({"mtu": 1400}))],
        );
        let rt = net.rt(&format!("c{n}"), &c);
        let res = net.exec.add(&list, &rt).unwrap();
        assert_eq!(res["cniVersion"], *v);
        let has_version_field = res["ips"][0].get("version").is_some();
        assert_eq!(has_version_field, *v < "1.0.0", "{v}: {res}");
        let a4 = addr(&res, 0);
        let a6 = addr(&res, 1);
        let shown = c.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(shown.contains(&format!("{a4}/24")), "{shown}");
        assert!(shown.contains(&format!("{a6}/64")), "{shown}");
        assert!(
            !shown.contains("tentative")
                || shown
                    .lines()
                    .filter(|l| l.contains("tentative"))
                    .all(|l| l.contains("fe80")),
            "{shown}"
        );
        let link = c.ip(&["-o", "link", "show", "dev", "eth0"]);
        assert!(link.contains("mtu 1400") && link.contains("UP"), "{link}");
        assert!(c.ip(&["route"]).contains("default via 10.201.0.1 dev eth0"));
        assert!(
            c.ip(&["-6", "route"])
                .contains("default via fd20:1::1 dev eth0")
        );
        let arp_notify = c
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_notify").unwrap())
            .join()
            .unwrap();
        assert_eq!(arp_notify.trim(), "1");
        net.exec.check(&list, &rt, &res).unwrap();
        net.exec.status(&list).unwrap();
        // The GC of 1.1 keeps what is valid.
        net.exec
            .gc(
                &list,
                &[berth_cni::config::Attachment {
                    container_id: rt.container_id.clone(),
                    ifname: "eth0".into(),
                }],
            )
            .unwrap();
        assert_eq!(net.reservations(), 1);
        net.exec.del(&list, &rt, Some(&res)).unwrap();
        net.exec.del(&list, &rt, Some(&res)).unwrap();
        assert_eq!(net.reservations(), 0);
        assert!(net.host_veths().is_empty(), "{:?}", net.host_veths());
        assert!(!c.ip(&["link"]).contains("eth0"));
        // VERSION answers in the version asked.
        let ver = net
            .exec
            .version("berth-cni", berth_cni::Version::parse(v).unwrap())
            .unwrap();
        assert_eq!(ver["cniVersion"], *v);
        assert!(ver["supportedVersions"].as_array().unwrap().len() == 4);
    }
    // The bridge keeps its fixed MAC, carries both gateways, and forwarding is on in the host
    // namespace only.
    let mac = berth_cni::kernel::real_mac(&berth_cni::plugin::bridge_mac("br0"));
    assert!(net.host.ip(&["link", "show", "br0"]).contains(&mac));
    let br = net.host.ip(&["-o", "addr", "show", "dev", "br0"]);
    assert!(
        br.contains("10.201.0.1/24") && br.contains("fd20:1::1/64"),
        "{br}"
    );
    let fwd = net
        .host
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
        .join()
        .unwrap();
    assert_eq!(fwd.trim(), "1");
}

#[test]
fn del_succeeds_when_the_namespace_is_gone() {
    let net = Net::new("gone");
    let list = net.list("1.1.0", vec![net.plugin(&["10.202.0.0/24"], json!({}))]);
    let c = Netns::new("gonec");
    let rt = net.rt("gone1", &c);
    let res = net.exec.add(&list, &rt).unwrap();
    drop(c);
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    assert_eq!(net.reservations(), 0);
    assert!(net.host_veths().is_empty());
}

#[test]
fn check_reports_a_removed_address() {
    let net = Net::new("drift");
    let list = net.list("1.0.0", vec![net.plugin(&["10.203.0.0/24"], json!({}))]);
    let c = Netns::new("driftc");
    let rt = net.rt("d1", &c);
    let res = net.exec.add(&list, &rt).unwrap();
    let a = format!("{}/24", addr(&res, 0));
    let ok = std::process::Command::new("ip")
        .args(["-n", &c.name, "addr", "del", &a, "dev", "eth0"])
        .status()
        .unwrap();
    assert!(ok.success());
    let e = net.exec.check(&list, &rt, &res).unwrap_err();
    assert_eq!(e.code(), Some(berth_cni::error::DRIFT), "{e}");
    net.exec.del(&list, &rt, Some(&res)).unwrap();
}

#[test]
fn masquerade_rules_follow_attachments() {
    if !crate::netns::on_path("nft") {
        eprintln!("skipped: nft missing (Debian nftables)");
        return;
    }
    let net = Net::new("masq");
    let list = net.list(
        "1.1.0",
        vec![net.plugin(&["10.204.0.0/24"], json!({"ipMasq": true}))],
    );
    let c = Netns::new("masqc");
    let rt = net.rt("m1", &c);
    let res = net.exec.add(&list, &rt).unwrap();
    let table = format!("berth_cni_{}", net.name);
    let list_table = || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.host.name,
                "nft",
                "list",
                "table",
                "inet",
                &table,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules = list_table();
    assert!(rules.contains(&addr(&res, 0).to_string()), "{rules}");
    assert!(rules.contains("masquerade"), "{rules}");
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    assert!(!list_table().contains(&addr(&res, 0).to_string()));
}

#[test]
fn delegated_ipam_with_the_reference_host_local() {
    if !std::path::Path::new("/usr/lib/cni/host-local").exists() {
        eprintln!("skipped: /usr/lib/cni/host-local missing (Debian containernetworking-plugins)");
        return;
    }
    let net = Net::new("hl");
    let data = net.dir.path().join("host-local");
    let plugin = json!({
        "type": "berth-cni", "bridge": "br0",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.205.0.0/24"}]], "dataDir": data},
    });
    let list = net.list("1.0.0", vec![plugin]);
    let c = Netns::new("hlc");
    let rt = net.rt("h1", &c);
    let res = net.exec.add(&list, &rt).unwrap();
    assert_eq!(addr(&res, 0).to_string(), "10.205.0.2");
    assert!(c.ip(&["-o", "addr"]).contains("10.205.0.2/24"));
    net.exec.check(&list, &rt, &res).unwrap();
    // A failed ADD gives the delegated address back itself (DEL to the IPAM plugin): the
    // plugin runs alone here, without the DEL a runtime sends after a failed ADD.
    let c2 = Netns::new("hlc2");
    let mut rt2 = net.rt("h2", &c2);
    rt2.ifname = "lo".into();
    let mut conf = list.plugins[0].clone();
    conf.insert("cniVersion".into(), json!("1.0.0"));
    conf.insert("name".into(), json!(net.name));
    let binary = net.exec.find("berth-cni").unwrap();
    let e = net
        .exec
        .run(
            &binary,
            &net.exec.env("ADD", Some(&rt2)),
            serde_json::to_vec(&conf).unwrap().as_slice(),
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(berth_cni::error::INTERFACE_EXISTS), "{e}");
    assert!(!data.join(&net.name).join("10.205.0.3").exists());
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    assert!(!data.join(&net.name).join("10.205.0.2").exists());
    assert!(net.host_veths().is_empty());
}

#[test]
fn requested_addresses_through_runtime_config_and_args() {
    let net = Net::new("req");
    let mut plugin = net.plugin(&["10.213.0.0/24"], json!({}));
    plugin["capabilities"] = json!({"ips": true});
    let list = net.list("1.1.0", vec![plugin]);
    let c = Netns::new("reqc");
    let mut rt = net.rt("r1", &c);
    rt.capability_args
        .insert("ips".into(), json!(["10.213.0.77/24"]));
    let res = net.exec.add(&list, &rt).unwrap();
    assert_eq!(addr(&res, 0).to_string(), "10.213.0.77");
    // The same address for another attachment is refused, naming the holder.
    let c2 = Netns::new("reqc2");
    let mut rt2 = net.rt("r2", &c2);
    rt2.args.push(("IP".into(), "10.213.0.77".into()));
    let e = net.exec.add(&list, &rt2).unwrap_err();
    assert_eq!(e.code(), Some(berth_cni::error::INVALID_CONFIG), "{e}");
    assert!(e.to_string().contains("r1/eth0"), "{e}");
    rt2.args = vec![("IP".into(), "10.213.0.78".into())];
    let res2 = net.exec.add(&list, &rt2).unwrap();
    assert_eq!(addr(&res2, 0).to_string(), "10.213.0.78");
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    net.exec.del(&list, &rt2, Some(&res2)).unwrap();
    assert_eq!(net.reservations(), 0);
}
