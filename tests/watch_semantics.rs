//! Watch details clients rely on: initial events with the end bookmark,
//! selector transitions, deletecollection, and CRD printer columns.

mod common;

use common::Server;
use futures::{AsyncBufReadExt, TryStreamExt};

/// Collects watch events (type, name, annotations) until `n` arrive or 5 s pass.
async fn events(
    c: &kube::Client,
    path: &str,
    n: usize,
    during: impl std::future::Future<Output = ()>,
) -> Vec<(String, String, serde_json::Value)> {
    let req = http::Request::get(path).body(vec![]).unwrap();
    let stream = c.request_stream(req).await.unwrap();
    let mut lines = stream.lines();
    let collect = async {
        let mut out = Vec::new();
        while let Some(line) = lines.try_next().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            out.push((
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                v["object"]["metadata"]["annotations"].clone(),
            ));
            if out.len() >= n {
                break;
            }
        }
        out
    };
    let (out, _) = tokio::join!(
        async {
            tokio::time::timeout(std::time::Duration::from_secs(5), collect)
                .await
                .unwrap_or_default()
        },
        during
    );
    out
}

#[tokio::test]
async fn initial_events_end_with_a_bookmark() {
    let s = Server::start();
    s.kubectl_ok(&["create", "configmap", "one"]);
    s.kubectl_ok(&["create", "configmap", "two"]);
    let c = s.client().await;
    let evs = events(
        &c,
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=5&fieldSelector=metadata.name%21%3Dkube-root-ca.crt",
        3,
        async {},
    )
    .await;
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_eq!((evs[0].0.as_str(), evs[0].1.as_str()), ("ADDED", "one"));
    assert_eq!((evs[1].0.as_str(), evs[1].1.as_str()), ("ADDED", "two"));
    assert_eq!(evs[2].0, "BOOKMARK");
    assert_eq!(evs[2].2["k8s.io/initial-events-end"], "true");
}

#[tokio::test]
async fn selector_transitions_are_added_and_deleted() {
    let s = Server::start();
    let rv = s.kubectl_ok(&["get", "cm", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let c = s.client().await;
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=team%3Dblue&resourceVersion={rv}&timeoutSeconds=5"
    );
    let s2 = &s;
    let evs = events(&c, &path, 3, async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        s2.kubectl_ok(&["create", "configmap", "shifty"]);
        s2.kubectl_ok(&["label", "cm", "shifty", "team=blue"]);
        s2.kubectl_ok(&["annotate", "cm", "shifty", "x=y"]);
        s2.kubectl_ok(&["label", "cm", "shifty", "team=red", "--overwrite"]);
    })
    .await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{evs:?}");
}

#[tokio::test]
async fn deletecollection_by_label() {
    let s = Server::start();
    for (n, l) in [("a1", "x=1"), ("a2", "x=1"), ("b1", "x=2")] {
        s.kubectl_ok(&["create", "configmap", n]);
        s.kubectl_ok(&["label", "cm", n, l]);
    }
    let c = s.client().await;
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps?labelSelector=x%3D1")
        .body(vec![])
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&c.request_text(req).await.unwrap()).unwrap();
    assert_eq!(out["kind"], "ConfigMapList");
    assert_eq!(out["items"].as_array().unwrap().len(), 2);
    let left = s.kubectl_ok(&["get", "cm", "-l", "x", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/b1");
}

#[tokio::test]
async fn crd_printer_columns_and_server_side_apply_conflicts() {
    let s = Server::start();
    s.kubectl_ok(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/demo.yaml"),
    ]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    s.kubectl_ok(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/widget.yaml"),
    ]);
    let table = s.kubectl_ok(&["get", "widgets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "AGE"], "{table}");
    assert!(
        table.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("3"),
        "{table}"
    );
    // Server-side apply: a second manager changing an owned field conflicts.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata:\n  k: one\n";
    s.kubectl_stdin_ok(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        cm,
    );
    let out = s.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        &cm.replace("one", "two"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflict") && err.contains("alice"), "{err}");
    s.kubectl_stdin_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &cm.replace("one", "two"),
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "owned", "-o", "jsonpath={.data.k}"]),
        "two"
    );
    let managers = s.kubectl_ok(&[
        "get",
        "cm",
        "owned",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("bob"), "{managers}");
}
