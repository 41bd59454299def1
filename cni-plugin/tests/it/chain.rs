//! berth-cni as the first plugin of a conflist, followed by the reference plugins (Debian
//! package containernetworking-plugins; skipped when it is not installed).

use std::path::Path;

use serde_json::json;

use crate::netns::{Net, Netns, addr};

#[test]
fn chains_with_reference_portmap_tuning_and_bandwidth() {
    for p in ["portmap", "tuning", "bandwidth"] {
        if !Path::new("/usr/lib/cni").join(p).exists() {
            eprintln!("skipped: /usr/lib/cni/{p} missing (Debian containernetworking-plugins)");
            return;
        }
    }
    if !crate::netns::on_path("iptables") {
        eprintln!("skipped: iptables missing (Debian iptables, needed by the reference portmap)");
        return;
    }
    let net = Net::new("chain");
    // The Debian reference plugins speak up to 1.0.0.
    let list = net.list(
        "1.0.0",
        vec![
            net.plugin(&["10.212.0.0/24"], json!({})),
            json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ],
    );
    let c = Netns::new("chainc");
    let mut rt = net.rt("p1", &c);
    // The host port lives in the test's host namespace only.
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    rt.capability_args.insert(
        "bandwidth".into(),
        json!({"ingressRate": 100000000, "ingressBurst": 10000000, "egressRate": 100000000, "egressBurst": 10000000}),
    );
    let res = net.exec.add(&list, &rt).unwrap();
    assert_eq!(addr(&res, 0).to_string(), "10.212.0.2");
    let accept_local = c
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/accept_local").unwrap())
        .join()
        .unwrap();
    assert_eq!(accept_local.trim(), "1");
    // CHECK of the reference portmap 1.1.1 fails against iptables-nft rule listings (a bug of
    // that plugin, not of the chain), so CHECK runs through berth-cni alone with the final,
    // chained result as its prevResult.
    let mut first = list.clone();
    first.plugins.truncate(1);
    net.exec.check(&first, &rt, &res).unwrap();
    net.exec.del(&list, &rt, Some(&res)).unwrap();
    assert_eq!(net.reservations(), 0);
    assert!(net.host_veths().is_empty());
}
