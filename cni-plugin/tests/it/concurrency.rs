//! 64 concurrent ADDs get 64 distinct addresses; 64 concurrent DELs leave nothing.

use std::collections::HashSet;

use serde_json::json;

use crate::netns::{Net, Netns, addr};

#[test]
fn sixty_four_concurrent_adds_and_dels() {
    const N: usize = 64;
    let net = Net::new("c64");
    let list = net.list(
        "1.1.0",
        vec![net.plugin(&["10.207.0.0/24", "fd20:7::/64"], json!({}))],
    );
    let nss: Vec<Netns> = (0..N).map(|i| Netns::new(&format!("c{i}"))).collect();
    let rts: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| net.rt(&format!("ct{i}"), ns))
        .collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = rts
            .iter()
            .map(|rt| s.spawn(|| net.exec.add(&list, rt)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let v4: HashSet<_> = results.iter().map(|r| addr(r, 0)).collect();
    let v6: HashSet<_> = results.iter().map(|r| addr(r, 1)).collect();
    assert_eq!(v4.len(), N);
    assert_eq!(v6.len(), N);
    assert_eq!(net.reservations(), N);
    assert_eq!(net.host_veths().len(), N);
    std::thread::scope(|s| {
        let handles: Vec<_> = rts
            .iter()
            .zip(&results)
            .map(|(rt, r)| s.spawn(|| net.exec.del(&list, rt, Some(r))))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(net.reservations(), 0);
    assert!(net.host_veths().is_empty(), "{:?}", net.host_veths());
    for ns in &nss {
        assert!(!ns.ip(&["link"]).contains("eth0"));
    }
}
