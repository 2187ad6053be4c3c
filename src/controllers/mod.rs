//! kube-controller-manager's work inside skiff: level-triggered
//! reconcilers (kube-runtime `Controller`s) that read through watches and
//! write only through the API, run under a leader-election Lease.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod hpa;
pub mod informer;
pub mod job;
pub mod leader;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podcontrol;
pub mod podgc;
pub mod pvbinder;
pub mod replicaset;
pub mod replicationcontroller;
pub mod serviceaccount;
pub mod statefulset;
mod workloads;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;

use informer::Informer;

/// `--kube-controller-manager-arg KEY=VALUE` settings, set once by the
/// server before the controllers start (flag names as upstream's, without
/// the leading dashes).
static ARGS: OnceLock<HashMap<String, String>> = OnceLock::new();
/// The cluster CA certificate (PEM), published as `kube-root-ca.crt`.
static CA_PEM: OnceLock<String> = OnceLock::new();

/// Records the controller-manager arguments (`KEY=VALUE` or `--KEY=VALUE`);
/// entries without `=` are flags set to "true". Later entries win.
pub fn set_args(args: &[String]) {
    let map = args
        .iter()
        .map(|a| {
            let a = a.trim_start_matches('-');
            match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (a.to_string(), "true".to_string()),
            }
        })
        .collect();
    let _ = ARGS.set(map);
}

/// The value of a controller-manager argument, if given.
pub fn arg(key: &str) -> Option<&'static str> {
    ARGS.get()?.get(key).map(String::as_str)
}

/// A duration argument in Go's notation (`40s`, `1m30s`, `500ms`); the
/// default when absent or unparsable.
pub fn arg_duration(key: &str, default: Duration) -> Duration {
    match arg(key).and_then(parse_go_duration) {
        Some(d) => d,
        None => {
            if let Some(v) = arg(key) {
                tracing::warn!("ignoring --{key}={v}: not a duration");
            }
            default
        }
    }
}

/// Parses Go's `time.ParseDuration` format (units h, m, s, ms, us, ns).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Drops from a cached object what no controller reads, once, before the
/// shared informer stores it: of a Pod its volumes, mounts, environment,
/// commands, probes, hooks and managedFields (every pod is cached, and the
/// typed volume structs alone are kilobytes); of a Node its managedFields
/// and image list. Other kinds pass untouched.
pub fn slim_cached<K: 'static>(obj: &mut K) {
    let obj = obj as &mut dyn std::any::Any;
    if let Some(node) = obj.downcast_mut::<Node>() {
        node.metadata.managed_fields = None;
        if let Some(status) = node.status.as_mut() {
            status.images = None;
        }
        return;
    }
    let Some(pod) = obj.downcast_mut::<Pod>() else {
        return;
    };
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.volume_mounts = None;
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
        }
    }
}

/// Records the cluster CA (PEM) for the root-CA publisher.
pub fn set_ca_pem(pem: String) {
    let _ = CA_PEM.set(pem);
}

/// The cluster CA (PEM), when the server provided it.
pub fn ca_pem() -> Option<&'static str> {
    CA_PEM.get().map(String::as_str)
}

/// Starts every controller; returns when the process shuts down.
///
/// Pods and Nodes are listed, watched and cached once, by the shared
/// informers created here (see `informer.rs`); each controller that reads
/// them gets a subscription: the shared store and its own change stream.
pub async fn run(client: Client, identity: String) {
    leader::run_while_leader(
        client.clone(),
        "skiff-controller-manager",
        identity,
        |client| async move {
            let pods = Informer::<Pod>::new(Api::all(client.clone()));
            let nodes = Informer::<Node>::new(Api::all(client.clone()));
            // Each controller runs until shutdown; one module per
            // controller. The subscriptions are all taken (as the
            // arguments are evaluated) before the informers start.
            tokio::join!(
                pods.run(),
                nodes.run(),
                deployment::run(client.clone()),
                replicaset::run(client.clone(), pods.subscribe()),
                job::run(client.clone(), pods.subscribe()),
                cronjob::run(client.clone()),
                daemonset::run(client.clone(), pods.subscribe(), nodes.subscribe()),
                statefulset::run(client.clone(), pods.subscribe()),
                endpoints::run(client.clone(), pods.subscribe(), nodes.store()),
                serviceaccount::run(client.clone()),
                nodelifecycle::run(client.clone(), pods.subscribe(), nodes.subscribe()),
                disruption::run(client.clone(), pods.subscribe()),
                podgc::run(client.clone(), pods.store(), nodes.subscribe()),
                nodeipam::run(client.clone(), nodes.subscribe()),
                pvbinder::run(client.clone()),
                hpa::run(client.clone()),
            );
        },
    )
    .await;
}
