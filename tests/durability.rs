//! Durability, watch resumption, compaction and optimistic concurrency,
//! through the `kube` client against a real server process.

mod common;

use std::time::Duration;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"v": v},
    }))
    .unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    // 8 concurrent writers; every acknowledged create is recorded.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let name = format!("w{w}-{i}");
                let created = api
                    .create(&PostParams::default(), &cm(&name, "x"))
                    .await
                    .unwrap();
                acked.push((name, created.metadata.resource_version.unwrap()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    s.restart_kill9();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    for (name, rv) in &acked {
        let got = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} lost after kill -9: {e}"));
        assert_eq!(got.metadata.resource_version.as_ref(), Some(rv), "{name}");
    }
    // New writes continue after the old revisions.
    let max_rv: i64 = acked
        .iter()
        .map(|(_, rv)| rv.parse::<i64>().unwrap())
        .max()
        .unwrap();
    let next = api
        .create(&PostParams::default(), &cm("after", "y"))
        .await
        .unwrap();
    assert!(
        next.metadata
            .resource_version
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > max_rv
    );
}

#[tokio::test]
async fn watch_resumes_with_exactly_the_missed_events_after_restart() {
    let mut s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let a = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let seen = a.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    let mut a2 = api.get("a").await.unwrap();
    a2.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("a", &PostParams::default(), &a2).await.unwrap();
    api.delete("b", &Default::default()).await.unwrap();
    s.restart_kill9();

    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let stream = api
        .watch(&WatchParams::default().timeout(3), &seen)
        .await
        .unwrap();
    let events: Vec<(String, String)> = stream
        .try_filter_map(|e| async move {
            Ok(match e {
                WatchEvent::Added(o) => Some(("ADDED".to_string(), o.metadata.name.unwrap())),
                WatchEvent::Modified(o) => Some(("MODIFIED".to_string(), o.metadata.name.unwrap())),
                WatchEvent::Deleted(o) => Some(("DELETED".to_string(), o.metadata.name.unwrap())),
                _ => None,
            })
        })
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        // The service-account controller keeps kube-root-ca.crt in every namespace.
        .filter(|(_, name)| name != "kube-root-ca.crt")
        .collect();
    let want: Vec<(String, String)> = [
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), n.to_string()))
    .collect();
    assert_eq!(events, want);
}

#[tokio::test]
async fn compacted_revision_gives_410_expired() {
    let s = Server::start_with(&["--compaction-interval", "1"]);
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let first = api
        .create(&PostParams::default(), &cm("old", "1"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    // Two compaction intervals with writes in between push `rv` out of history.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        api.create(&PostParams::default(), &cm(&format!("n{i}"), "1"))
            .await
            .unwrap();
    }
    // The watch cache forgets compacted history too (Cache::compacted), so
    // the answer is the store's 410, not a replay from memory.
    let mut stream = api
        .watch(
            &WatchParams::default().timeout(5),
            &(rv.parse::<i64>().unwrap() - 1).to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("no event")
        .expect("stream ended");
    match ev {
        Ok(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 Expired error event, got {other:?}"),
    }
}

#[tokio::test]
async fn optimistic_concurrency_one_winner_per_round() {
    let s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    api.create(&PostParams::default(), &cm("race", "0"))
        .await
        .unwrap();
    for round in 0..10 {
        let base = api.get("race").await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let api = api.clone();
            let mut mine = base.clone();
            mine.data = Some([("v".to_string(), format!("{round}-{w}"))].into());
            tasks.push(tokio::spawn(async move {
                api.replace("race", &PostParams::default(), &mine).await
            }));
        }
        let mut wins = 0;
        let mut conflicts = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "Conflict" => {
                    conflicts += 1
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!((wins, conflicts), (1, 7), "round {round}");
    }
}
