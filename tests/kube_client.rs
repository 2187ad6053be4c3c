//! Integration tests driving skiff with the `kube` crate (the Rust client
//! most controllers use). Each test runs its own server.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A client built from the admin kubeconfig the server wrote (CA and client
/// certificate embedded; TLS fully verified).
fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: (!labels.is_empty()).then(|| map(labels)),
            ..Default::default()
        },
        data: Some(map(data)),
        ..Default::default()
    }
}

/// The `Status` of an API error; panics on success or on other errors.
fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error (kube::Error::Api), got {other:?}"),
    }
}

fn data_of(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

#[tokio::test]
async fn apiserver_version_is_1_33() {
    let server = Server::start();
    let client = server.client().await;
    let info = client
        .apiserver_version()
        .await
        .expect("GET /version failed");
    assert_eq!(info.major, "1", "{info:?}");
    assert_eq!(info.minor, "33", "{info:?}");
}

#[tokio::test]
async fn configmap_create_get_delete() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");

    let created = api
        .create(
            &PostParams::default(),
            &config_map("cm-crud", &[("app", "crud")], &[("k1", "v1")]),
        )
        .await
        .expect("create ConfigMap");
    assert_eq!(created.name_any(), "cm-crud");
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert!(created.uid().is_some(), "no uid: {created:?}");
    assert!(
        created.resource_version().is_some(),
        "no resourceVersion: {created:?}"
    );
    assert!(
        created.metadata.creation_timestamp.is_some(),
        "no creationTimestamp: {created:?}"
    );

    let got = api.get("cm-crud").await.expect("get ConfigMap");
    assert_eq!(got.uid(), created.uid());
    assert_eq!(got.resource_version(), created.resource_version());
    assert_eq!(data_of(&got).get("k1").map(String::as_str), Some("v1"));

    // Creating it again is a conflict.
    let again = api
        .create(
            &PostParams::default(),
            &config_map("cm-crud", &[], &[("k1", "other")]),
        )
        .await;
    let status = api_error(again);
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "AlreadyExists", "{status:?}");

    let list = api
        .list(&ListParams::default())
        .await
        .expect("list ConfigMaps");
    assert!(
        list.items.iter().any(|c| c.name_any() == "cm-crud"),
        "list lacks cm-crud: {:?}",
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    assert!(
        list.metadata.resource_version.is_some(),
        "list has no resourceVersion"
    );

    api.delete("cm-crud", &DeleteParams::default())
        .await
        .expect("delete ConfigMap");
    let status = api_error(api.get("cm-crud").await);
    assert_eq!(status.code, 404, "{status:?}");
}

#[tokio::test]
async fn configmap_list_with_label_selector() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for (name, app) in [("sel-a1", "a"), ("sel-a2", "a"), ("sel-b1", "b")] {
        api.create(
            &PostParams::default(),
            &config_map(name, &[("app", app)], &[("x", "y")]),
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    api.create(
        &PostParams::default(),
        &config_map("sel-none", &[], &[("x", "y")]),
    )
    .await
    .expect("create sel-none");

    let names = |l: kube::core::ObjectList<ConfigMap>| {
        let mut v: Vec<String> = l.items.iter().map(|c| c.name_any()).collect();
        v.sort();
        v
    };

    let a = api
        .list(&ListParams::default().labels("app=a"))
        .await
        .expect("list app=a");
    assert_eq!(names(a), vec!["sel-a1", "sel-a2"], "labelSelector=app=a");

    let b = api
        .list(&ListParams::default().labels("app=b"))
        .await
        .expect("list app=b");
    assert_eq!(names(b), vec!["sel-b1"], "labelSelector=app=b");

    let not_a = api
        .list(&ListParams::default().labels("app,app!=a"))
        .await
        .expect("list app,app!=a");
    assert_eq!(names(not_a), vec!["sel-b1"], "labelSelector=app,app!=a");
}

#[tokio::test]
async fn configmap_replace_with_stale_resource_version_conflicts() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(
        &PostParams::default(),
        &config_map("cm-replace", &[], &[("k", "0")]),
    )
    .await
    .expect("create");

    let stale = api.get("cm-replace").await.expect("get");

    let mut fresh = stale.clone();
    fresh.data = Some(BTreeMap::from([("k".to_string(), "1".to_string())]));
    let replaced = api
        .replace("cm-replace", &PostParams::default(), &fresh)
        .await
        .expect("replace with current resourceVersion");
    assert_eq!(data_of(&replaced).get("k").map(String::as_str), Some("1"));
    assert_ne!(
        replaced.resource_version(),
        stale.resource_version(),
        "resourceVersion did not change on update"
    );

    let mut conflicting = stale.clone();
    conflicting.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    let status = api_error(
        api.replace("cm-replace", &PostParams::default(), &conflicting)
            .await,
    );
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "Conflict", "{status:?}");

    // The losing write left no trace.
    let now = api.get("cm-replace").await.expect("get after conflict");
    assert_eq!(data_of(&now).get("k").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn configmap_merge_patch() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(
        &PostParams::default(),
        &config_map("cm-merge", &[("a", "1")], &[("k1", "v1"), ("k2", "v2")]),
    )
    .await
    .expect("create");

    let patch = json!({
        "metadata": {"labels": {"b": "2"}},
        "data": {"k1": null, "k3": "v3"}
    });
    let patched = api
        .patch("cm-merge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch");
    let data = data_of(&patched);
    assert_eq!(data.get("k1"), None, "null must delete k1: {data:?}");
    assert_eq!(data.get("k2").map(String::as_str), Some("v2"), "{data:?}");
    assert_eq!(data.get("k3").map(String::as_str), Some("v3"), "{data:?}");
    let labels = patched.labels();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"), "{labels:?}");
    assert_eq!(labels.get("b").map(String::as_str), Some("2"), "{labels:?}");

    let got = api.get("cm-merge").await.expect("get");
    assert_eq!(data_of(&got), data);
}

#[tokio::test]
async fn configmap_strategic_merge_patch() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(
        &PostParams::default(),
        &config_map("cm-smp", &[("a", "1")], &[("k1", "v1"), ("k2", "v2")]),
    )
    .await
    .expect("create");

    let patch = json!({
        "metadata": {"labels": {"patched": "strategic"}},
        "data": {"k2": null, "k3": "v3"}
    });
    let patched = api
        .patch("cm-smp", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch");
    let data = data_of(&patched);
    assert_eq!(data.get("k1").map(String::as_str), Some("v1"), "{data:?}");
    assert_eq!(data.get("k2"), None, "null must delete k2: {data:?}");
    assert_eq!(data.get("k3").map(String::as_str), Some("v3"), "{data:?}");
    let labels = patched.labels();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"), "{labels:?}");
    assert_eq!(
        labels.get("patched").map(String::as_str),
        Some("strategic"),
        "{labels:?}"
    );

    let got = api.get("cm-smp").await.expect("get");
    assert_eq!(data_of(&got), data);
}

#[tokio::test]
async fn configmap_server_side_apply() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let params = PatchParams::apply("test").force();

    // Apply creates the object when it does not exist.
    let first = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm-apply", "labels": {"owner": "test"}},
        "data": {"applied": "yes", "n": "1"}
    });
    let created = api
        .patch("cm-apply", &params, &Patch::Apply(&first))
        .await
        .expect("server-side apply (create)");
    let data = data_of(&created);
    assert_eq!(
        data.get("applied").map(String::as_str),
        Some("yes"),
        "{data:?}"
    );
    assert!(
        created
            .metadata
            .managed_fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(
                |m| m.manager.as_deref() == Some("test") && m.operation.as_deref() == Some("Apply")
            ),
        "no managedFields entry for manager \"test\" with operation Apply: {:?}",
        created.metadata.managed_fields
    );

    // Another manager adds a key with a merge patch.
    api.patch(
        "cm-apply",
        &PatchParams {
            field_manager: Some("other".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"other": "x"}})),
    )
    .await
    .expect("merge patch by another manager");

    // Re-applying without "n" drops the field this manager owned, keeps the
    // one owned by the other manager, and changes "applied".
    let second = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm-apply", "labels": {"owner": "test"}},
        "data": {"applied": "again"}
    });
    let applied = api
        .patch("cm-apply", &params, &Patch::Apply(&second))
        .await
        .expect("server-side apply (update)");
    let data = data_of(&applied);
    assert_eq!(
        data.get("applied").map(String::as_str),
        Some("again"),
        "{data:?}"
    );
    assert_eq!(
        data.get("n"),
        None,
        "field removed from the applied config must be pruned: {data:?}"
    );
    assert_eq!(
        data.get("other").map(String::as_str),
        Some("x"),
        "field owned by another manager must survive: {data:?}"
    );
}

#[tokio::test]
async fn get_missing_object_is_404_not_found() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let status = api_error(api.get("does-not-exist").await);
    assert_eq!(status.code, 404, "{status:?}");
    assert_eq!(status.reason, "NotFound", "{status:?}");
}

#[tokio::test]
async fn watcher_sees_object_created_after_start() {
    let server = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();

    // Let the initial list finish so the object below arrives over the watch.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::InitDone)) => break,
                Ok(Some(_)) => {}
                Ok(None) => panic!("watcher stream ended during initial list"),
                Err(e) => panic!("watcher error during initial list: {e:?}"),
            }
        }
    })
    .await
    .expect("watcher did not finish its initial list within 10 s");

    api.create(
        &PostParams::default(),
        &config_map("watched", &[("w", "1")], &[("k", "v")]),
    )
    .await
    .expect("create ConfigMap");

    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)))
                    if cm.name_any() == "watched" =>
                {
                    break cm;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("watcher stream ended"),
                Err(e) => panic!("watcher error: {e:?}"),
            }
        }
    })
    .await
    .expect("no Apply event for the new ConfigMap within 10 s");
    assert_eq!(data_of(&seen).get("k").map(String::as_str), Some("v"));
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "skiff.example.com",
    version = "v1",
    kind = "Gizmo",
    plural = "gizmos",
    namespaced
)]
pub struct GizmoSpec {
    pub size: i32,
    pub color: String,
}

#[tokio::test]
async fn custom_resource_definition_lifecycle() {
    let server = Server::start();
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Gizmo::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("gizmos.skiff.example.com")
    );
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CustomResourceDefinition");

    // Wait until Established.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = crds
            .get("gizmos.skiff.example.com")
            .await
            .expect("get CustomResourceDefinition");
        let established = got
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CRD not Established within 5 s; status: {:?}",
            got.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gizmos: Api<Gizmo> = Api::namespaced(client.clone(), "default");
    let spec = GizmoSpec {
        size: 3,
        color: "teal".into(),
    };
    let created = gizmos
        .create(&PostParams::default(), &Gizmo::new("g1", spec.clone()))
        .await
        .expect("create Gizmo");
    assert_eq!(created.name_any(), "g1");
    assert_eq!(created.spec, spec);
    assert!(created.uid().is_some(), "no uid: {created:?}");

    gizmos
        .create(
            &PostParams::default(),
            &Gizmo::new(
                "g2",
                GizmoSpec {
                    size: 7,
                    color: "red".into(),
                },
            ),
        )
        .await
        .expect("create second Gizmo");

    let list = gizmos
        .list(&ListParams::default())
        .await
        .expect("list Gizmos");
    let mut names: Vec<String> = list.items.iter().map(|g| g.name_any()).collect();
    names.sort();
    assert_eq!(names, vec!["g1", "g2"]);

    let got = gizmos.get("g1").await.expect("get Gizmo");
    assert_eq!(got.spec, spec);
    assert_eq!(got.uid(), created.uid());

    gizmos
        .delete("g1", &DeleteParams::default())
        .await
        .expect("delete Gizmo");
    let status = api_error(gizmos.get("g1").await);
    assert_eq!(status.code, 404, "{status:?}");
    assert_eq!(status.reason, "NotFound", "{status:?}");

    let list = gizmos
        .list(&ListParams::default())
        .await
        .expect("list Gizmos after delete");
    let names: Vec<String> = list.items.iter().map(|g| g.name_any()).collect();
    assert_eq!(names, vec!["g2"]);
}

#[tokio::test]
async fn discovery_finds_apps_v1_deployment() {
    let server = Server::start();
    let discovery = Discovery::new(server.client().await)
        .run()
        .await
        .expect("discovery failed");

    let apps = discovery.get("apps").unwrap_or_else(|| {
        panic!(
            "no apps group; groups: {:?}",
            discovery.groups().map(|g| g.name()).collect::<Vec<_>>()
        )
    });
    assert!(
        apps.versions().any(|v| v == "v1"),
        "apps versions: {:?}",
        apps.versions().collect::<Vec<_>>()
    );
    let resources = apps.versioned_resources("v1");
    let (ar, caps) = resources
        .iter()
        .find(|(ar, _)| ar.kind == "Deployment")
        .unwrap_or_else(|| {
            panic!(
                "apps/v1 has no Deployment: {:?}",
                resources.iter().map(|(ar, _)| &ar.kind).collect::<Vec<_>>()
            )
        });
    assert_eq!(ar.plural, "deployments");
    assert_eq!(ar.api_version, "apps/v1");
    assert_eq!(caps.scope, Scope::Namespaced);

    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .is_some(),
        "core v1 ConfigMap not discovered"
    );
}
