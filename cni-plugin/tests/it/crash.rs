//! A plugin killed with SIGKILL in the middle of ADD leaves nothing behind after DEL and GC.

use std::time::{Duration, Instant};

use berth_cni::config::Attachment;
use serde_json::json;

use crate::netns::{Net, Netns};

/// Starts ADD with a pause armed at `step`, waits for it, kills the plugin with SIGKILL.
fn kill_at(net: &Net, list: &berth_cni::NetworkList, rt: &berth_cni::RuntimeConf, step: &str) {
    let marker = net
        .dir
        .path()
        .join(format!("paused-{step}-{}", rt.container_id));
    let mut exec = net.exec.clone();
    exec.extra_env.push((
        berth_cni::pause::VAR.into(),
        format!("{step}:{}", marker.display()),
    ));
    let binary = exec.find("berth-cni").unwrap();
    let mut child = exec.spawn(&binary, &exec.env("ADD", Some(rt))).unwrap();
    let mut conf = list.plugins[0].clone();
    conf.insert("cniVersion".into(), json!(list.cni_version.as_str()));
    conf.insert("name".into(), json!(list.name));
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        serde_json::to_vec(&conf).unwrap().as_slice(),
    )
    .unwrap();
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("plugin exited before pausing at {step}: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "pause point {step} never reached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn sigkill_mid_add_then_del_leaves_nothing() {
    let net = Net::new("kill");
    let list = net.list("1.1.0", vec![net.plugin(&["10.208.0.0/24"], json!({}))]);
    for step in berth_cni::pause::STEPS {
        let c = Netns::new("killc");
        let rt = net.rt(&format!("k-{step}"), &c);
        kill_at(&net, &list, &rt, step);
        assert_eq!(net.reservations(), 1, "{step}");
        net.exec.del(&list, &rt, None).unwrap();
        assert_eq!(net.reservations(), 0, "{step}");
        assert!(
            net.host_veths().is_empty(),
            "{step}: {:?}",
            net.host_veths()
        );
        assert!(!c.ip(&["link"]).contains("eth0"), "{step}");
        // A retried ADD after the crash works.
        let res = net.exec.add(&list, &rt).unwrap();
        net.exec.del(&list, &rt, Some(&res)).unwrap();
    }
}

#[test]
fn sigkill_mid_add_then_gc_leaves_nothing_and_keeps_the_valid() {
    let net = Net::new("killgc");
    let list = net.list("1.1.0", vec![net.plugin(&["10.209.0.0/24"], json!({}))]);
    let keep_ns = Netns::new("keep");
    let keep = net.rt("keeper", &keep_ns);
    let kept = net.exec.add(&list, &keep).unwrap();
    let mut victims = Vec::new();
    for step in berth_cni::pause::STEPS {
        let c = Netns::new("gcc");
        let rt = net.rt(&format!("g-{step}"), &c);
        kill_at(&net, &list, &rt, step);
        victims.push(c);
    }
    assert_eq!(net.reservations(), 4);
    net.exec
        .gc(
            &list,
            &[Attachment {
                container_id: "keeper".into(),
                ifname: "eth0".into(),
            }],
        )
        .unwrap();
    assert_eq!(net.reservations(), 1);
    assert_eq!(net.host_veths().len(), 1);
    for c in &victims {
        assert!(!c.ip(&["link"]).contains("eth0"));
    }
    net.exec.check(&list, &keep, &kept).unwrap();
    net.exec.gc(&list, &[]).unwrap();
    assert_eq!(net.reservations(), 0);
    assert!(net.host_veths().is_empty());
}
