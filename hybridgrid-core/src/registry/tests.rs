use futures::StreamExt;

use super::*;
use crate::testutil::{capture_logs, gcc_amd64, worker_info};
use crate::worker::Arch;

fn w(id: &str) -> WorkerInfo {
    worker_info(id, Arch::Amd64, &[gcc_amd64()])
}

async fn next(ch: &mut WorkerChanges) -> WorkerChange {
    match ch.next().await {
        Some(Ok(c)) => c,
        other => panic!("no change: {other:?}"),
    }
}

#[tokio::test]
async fn register_logs_and_publishes() {
    let (logs, _g) = capture_logs();
    let reg = Registry::new();
    let mut ch = reg.subscribe();
    assert_eq!(reg.register(w("w1")), Registration::New);
    let text = logs.text();
    assert!(text.contains("msg=\"worker registered\""), "{text}");
    assert!(text.contains("worker_id=w1"), "{text}");
    assert!(text.contains("arch=amd64"), "{text}");
    assert!(text.contains("source=handshake"), "{text}");
    assert!(matches!(next(&mut ch).await, Change::Insert(k, _) if k.0 == "w1"));
}

#[tokio::test]
async fn two_sources_are_one_worker() {
    let reg = Registry::new();
    reg.register(w("w1"));
    let mut mdns = w("w1");
    mdns.source = WorkerSource::Mdns;
    assert_eq!(reg.register(mdns), Registration::Updated);
    assert_eq!(reg.len(), 1);
    let snap = reg.get(&"w1".into()).expect("registered");
    assert_eq!(
        snap.sources,
        vec![WorkerSource::Handshake, WorkerSource::Mdns]
    );
    assert_eq!(snap.worker.info.source, WorkerSource::Handshake);
}

#[tokio::test]
async fn update_publishes_new_capabilities_and_keeps_stats() {
    let reg = Registry::new();
    reg.register(w("w1"));
    let mut ch = reg.subscribe();
    let first = match next(&mut ch).await {
        Change::Insert(_, wk) => wk,
        Change::Remove(_) => panic!("remove"),
    };
    first.stats.start(1);
    reg.register(w("w1"));
    let mut changed = w("w1");
    changed.capabilities.cores = 64;
    reg.register(changed);
    match next(&mut ch).await {
        Change::Insert(_, wk) => {
            assert_eq!(wk.info.capabilities.cores, 64);
            assert_eq!(wk.stats.active(), 1, "same stats");
        }
        Change::Remove(_) => panic!("remove"),
    }
}

#[tokio::test]
async fn same_address_new_id_replaces() {
    let reg = Registry::new();
    reg.register(w("old"));
    let mut n = w("new");
    n.address = "old:50052".into();
    reg.register(n);
    assert_eq!(reg.len(), 1);
    assert!(reg.get(&"new".into()).is_some());
}

#[tokio::test(start_paused = true)]
async fn heartbeat_and_expire() {
    let (logs, _g) = capture_logs();
    let reg = Registry::new();
    reg.register(w("a"));
    reg.register(w("b"));
    let mut ch = reg.subscribe();
    next(&mut ch).await;
    next(&mut ch).await;
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(reg.heartbeat(&"a".into()));
    tokio::time::advance(Duration::from_secs(15)).await;
    let gone = reg.expire(Duration::from_secs(30));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].id.0, "b");
    assert!(matches!(next(&mut ch).await, Change::Remove(k) if k.0 == "b"));
    assert!(
        !reg.heartbeat(&"b".into()),
        "expired worker must re-register"
    );
    let text = logs.text();
    assert!(text.contains("msg=\"worker left\""), "{text}");
    assert!(text.contains("no heartbeat for 30s"), "{text}");
    assert!(reg.remove(&"a".into(), "shutdown").is_some());
    assert!(reg.is_empty());
}
