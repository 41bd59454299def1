use std::time::Duration;

use super::*;
use crate::api::{Metadata, Route, RouteRule, RouteSpec};

fn route(name: &str, host: &str) -> Object {
    Object::Route(Route {
        metadata: Metadata::new("default", name),
        spec: RouteSpec {
            hosts: vec![host.to_owned()],
            tls: None,
            rules: vec![RouteRule {
                path: "/".into(),
                service: "s".into(),
                port: "http".into(),
                timeout_ms: None,
                retries: None,
            }],
            sticky: None,
        },
    })
}

#[test]
fn apply_is_idempotent_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let out = store
            .apply(vec![route("a", "a.example"), route("b", "b.example")])
            .unwrap();
        assert_eq!(out[0].1, Outcome::Created);
        assert_eq!(store.revision(), 2);
        let out = store.apply(vec![route("a", "a.example")]).unwrap();
        assert_eq!(out[0].1, Outcome::Unchanged);
        assert_eq!(
            store.revision(),
            2,
            "unchanged objects do not bump the revision"
        );
        let out = store.apply(vec![route("a", "a2.example")]).unwrap();
        assert_eq!(out[0].1, Outcome::Configured);
        let a = store.get(Kind::Route, "default", "a").unwrap();
        assert_eq!(a.meta().revision, 3);
        assert_eq!(a.meta().created_revision, 1);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), 3);
    let (items, rev) = store.list(Kind::Route, Some("default"));
    assert_eq!((items.len(), rev), (2, 3));
    assert!(store.list(Kind::Route, Some("other")).0.is_empty());
    assert!(store.list(Kind::App, None).0.is_empty());
}

#[test]
fn failed_transaction_changes_nothing_and_cas_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create(route("a", "a.example")).unwrap();
    let r: Result<(), _> = store.transaction(|tx| {
        tx.put(route("b", "b.example"));
        Err(StoreError::NotFound("x".into()))
    });
    assert!(r.is_err());
    assert!(store.get(Kind::Route, "default", "b").is_none());
    assert!(matches!(
        store.create(route("a", "x")),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.update(route("a", "x"), 7),
        Err(StoreError::Conflict { actual: 1, .. })
    ));
    store.update(route("a", "x.example"), 1).unwrap();
    assert_eq!(
        store
            .delete(Kind::Route, "default", "a")
            .unwrap()
            .map(|o| o.key()),
        Some("routes/default/a".to_owned())
    );
    assert!(store.delete(Kind::Route, "default", "a").unwrap().is_none());
}

#[tokio::test]
async fn watch_delivers_in_order_and_reports_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_history(dir.path(), 4).unwrap();
    let mut w = store.watch(0).unwrap();
    let writer = store.clone();
    tokio::spawn(async move {
        for i in 0..3 {
            writer.create(route(&format!("r{i}"), "h.example")).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        writer.delete(Kind::Route, "default", "r0").unwrap();
    });
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let events = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("events within 5 s")
            .unwrap();
        seen.extend(events.iter().map(|e| (e.revision, e.kind)));
    }
    assert_eq!(
        seen,
        [
            (1, EventType::Added),
            (2, EventType::Added),
            (3, EventType::Added),
            (4, EventType::Deleted)
        ]
    );
    for i in 3..8 {
        store.create(route(&format!("r{i}"), "h.example")).unwrap();
    }
    // History keeps 4 events: revisions 6..=9. Resuming from 5 is still possible, from 4 not.
    assert!(store.watch(5).is_ok());
    assert!(matches!(
        store.watch(4),
        Err(StoreError::TooOld {
            requested: 4,
            oldest: 5
        })
    ));
    let mut behind = store.watch(5).unwrap();
    assert_eq!(behind.next().await.unwrap().len(), 4);
}

#[tokio::test]
async fn reopened_store_cannot_resume_old_revisions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create(route("a", "a.example")).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(store.watch(0), Err(StoreError::TooOld { .. })));
    assert!(store.watch(1).is_ok());
}
