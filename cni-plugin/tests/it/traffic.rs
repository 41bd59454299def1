//! Two instances on one bridge reach each other and the gateway over TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::netns::{Net, Netns, addr};

fn echo_once(listener: TcpListener) -> String {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn call(to: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn two_instances_reach_each_other_and_the_gateway() {
    let net = Net::new("tcp");
    let list = net.list(
        "1.1.0",
        vec![net.plugin(
            &["10.206.0.0/24", "fd20:6::/64"],
            json!({"hairpinMode": true}),
        )],
    );
    let (c1, c2) = (Netns::new("tcp1"), Netns::new("tcp2"));
    let (rt1, rt2) = (net.rt("a1", &c1), net.rt("a2", &c2));
    let r1 = net.exec.add(&list, &rt1).unwrap();
    let r2 = net.exec.add(&list, &rt2).unwrap();
    let port = r1["interfaces"][1]["name"].as_str().unwrap();
    assert!(
        net.host
            .ip(&["-d", "link", "show", port])
            .contains("hairpin on")
    );
    for family in [0, 1] {
        let a1 = addr(&r1, family);
        // Instance 1 serves, instance 2 calls it.
        let (tx, rx) = std::sync::mpsc::channel();
        let server = c1.run(move || {
            let l = TcpListener::bind(SocketAddr::new(a1, 0)).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            echo_once(l)
        });
        let to = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(c2.run(move || call(to)).join().unwrap(), "hello");
        assert_eq!(server.join().unwrap(), "hello");
        // The gateway (the bridge in the test's host namespace) serves, instance 2 calls it.
        let gw = r2["ips"][family]["gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = net.host.run(move || {
            let l = TcpListener::bind(SocketAddr::new(gw, 0)).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            echo_once(l)
        });
        let to = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(c2.run(move || call(to)).join().unwrap(), "hello");
        assert_eq!(server.join().unwrap(), "hello");
    }
    net.exec.del(&list, &rt1, Some(&r1)).unwrap();
    net.exec.del(&list, &rt2, Some(&r2)).unwrap();
    assert!(net.host_veths().is_empty());
}
