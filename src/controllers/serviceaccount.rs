//! The service-account controller and the root-CA publisher: every live
//! namespace gets a `default` ServiceAccount and a `kube-root-ca.crt`
//! ConfigMap holding the cluster CA, recreated when deleted and restored
//! when edited (upstream's `serviceaccount-controller` and
//! `root-ca-certificate-publisher-controller`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

pub const DEFAULT_SA: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION_KEY: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: Client,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] kube::Error);

pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Only the objects this controller maintains wake it up.
    let sa_cfg = watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SA}"));
    let cm_cfg = watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}"));
    let by_namespace = |ns: Option<String>| ns.map(|ns| ObjectRef::<Namespace>::new(&ns));
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(client.clone()),
            sa_cfg,
            move |sa| by_namespace(sa.metadata.namespace),
        )
        .watches(Api::<ConfigMap>::all(client.clone()), cm_cfg, move |cm| {
            by_namespace(cm.metadata.namespace)
        })
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Namespace>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::debug!("serviceaccount controller: {err}");
    Action::requeue(Duration::from_secs(5))
}

/// True when the namespace is being deleted: creating into it would be
/// refused (and would only delay its finalization).
fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether a create failed only because the object exists already or the
/// namespace went away meanwhile — both settle by themselves.
fn benign(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => {
            s.code == 409 || s.code == 404 || (s.code == 403 && s.message.contains("terminat"))
        }
        _ => false,
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    ensure_default_sa(&ctx.client, &name).await?;
    if let Some(ca) = super::ca_pem() {
        ensure_root_ca(&ctx.client, &name, ca).await?;
    }
    Ok(Action::await_change())
}

async fn ensure_default_sa(client: &Client, ns: &str) -> Result<(), Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if api.get_opt(DEFAULT_SA).await?.is_some() {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(DEFAULT_SA.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::debug!(namespace = ns, "created the default service account");
            Ok(())
        }
        Err(e) if benign(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_root_ca(client: &Client, ns: &str, ca: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data: std::collections::BTreeMap<String, String> =
        [("ca.crt".to_string(), ca.to_string())].into();
    match api.get_opt(ROOT_CA_CONFIGMAP).await? {
        None => {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                    "annotations": {DESCRIPTION_KEY: DESCRIPTION}},
                "data": data,
            }))
            .map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok(()),
                Err(e) if benign(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut cm) => {
            let described = cm
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get(DESCRIPTION_KEY).is_some_and(|d| !d.is_empty()));
            if cm.data.as_ref() == Some(&data) && described {
                return Ok(());
            }
            // Someone edited it: put back exactly the CA bundle, keeping
            // their other metadata (resourceVersion guards the write).
            cm.data = Some(data);
            cm.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(DESCRIPTION_KEY.into(), DESCRIPTION.into());
            api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                .await?;
            Ok(())
        }
    }
}
