//! The endpoints and endpointslice controllers: for every Service with a
//! selector, the pods it selects become its `Endpoints` (core/v1, named as
//! the Service) and its `EndpointSlice`s (discovery.k8s.io/v1, owned by the
//! Service), as upstream's `endpoint-controller` and
//! `endpointslice-controller` write them. Services without a selector
//! (including `default/kubernetes`, whose endpoints belong to the API
//! server) are left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::informer::Subscription;

pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Endpoints carrying this annotation are leader-election records, not
/// service endpoints; they are never cleaned up.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Upstream's `--max-endpoints-per-slice` default.
const MAX_PER_SLICE: usize = 100;
/// Addresses beyond this are truncated from an Endpoints object.
const MAX_ENDPOINTS_ADDRESSES: usize = 1000;

struct Ctx {
    client: Client,
    nodes: Store<Node>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] kube::Error);

/// `pods` triggers the services selecting a pod; `nodes` (the shared node
/// store) gives endpoints their zone.
pub async fn run(client: Client, pods: Subscription<Pod>, nodes: Store<Node>) {
    // Our slices, to find the services a pod was in before its labels changed.
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let slice_watch = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&managed),
    )
    .default_backoff()
    .reflect(slice_writer)
    .for_each(|_| async {});

    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let run = controller
        .watches_shared_stream(pods.objects(), move |pod| {
            services_for_pod(&services, &slices, &pod)
        })
        .owns(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&managed),
        )
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |ep| {
                let ns = ep.metadata.namespace.clone()?;
                Some(ObjectRef::<Service>::new(&ep.name_any()).within(&ns))
            },
        )
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client: client.clone(),
                nodes,
            }),
        )
        .for_each(|_| async {});
    tokio::join!(slice_watch, run, delete_orphaned_endpoints(client));
}

fn error_policy(svc: Arc<Service>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::debug!(service = %svc.name_any(), "endpoints controller: {err}");
    Action::requeue(Duration::from_secs(2))
}

/// The services to resync after a change to `pod`: those selecting it now,
/// and those whose slices still list it (its labels may have changed).
fn services_for_pod(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let Some(ns) = pod.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut names: HashSet<String> = services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            selector_of(s).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| s.name_any())
        .collect();
    let pod_name = pod.name_any();
    for slice in slices.state() {
        if slice.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        let lists_pod = slice.endpoints.iter().any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(pod_name.as_str()))
        });
        if lists_pod && let Some(svc) = slice.labels().get(LABEL_SERVICE_NAME) {
            names.insert(svc.clone());
        }
    }
    names
        .into_iter()
        .map(|n| ObjectRef::new(&n).within(ns))
        .collect()
}

/// The service's selector; `None` for selectorless services, whose
/// endpoints are managed by someone else.
fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Deletes the Endpoints of deleted services: when a service goes away, and
/// once at start for Endpoints whose service disappeared while no
/// controller was running (upstream's `checkLeftoverEndpoints`).
async fn delete_orphaned_endpoints(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut swept = false;
    let stream = watcher(services, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(ev) = ev else { continue };
        match ev {
            watcher::Event::Init => seen.clear(),
            watcher::Event::InitApply(svc) => {
                seen.insert((svc.namespace().unwrap_or_default(), svc.name_any()));
            }
            watcher::Event::InitDone if !swept => {
                swept = true;
                sweep_endpoints(&client, &seen).await;
                seen.clear();
            }
            watcher::Event::InitDone | watcher::Event::Apply(_) => {}
            watcher::Event::Delete(svc) => {
                let ns = svc.namespace().unwrap_or_default();
                let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
                if let Ok(Some(ep)) = api.get_opt(&svc.name_any()).await
                    && !is_leader_record(&ep)
                {
                    let _ = api.delete(&svc.name_any(), &DeleteParams::default()).await;
                }
            }
        }
    }
}

fn is_leader_record(ep: &Endpoints) -> bool {
    ep.annotations().contains_key(LEADER_ANNOTATION)
}

async fn sweep_endpoints(client: &Client, services: &HashSet<(String, String)>) {
    let api: Api<Endpoints> = Api::all(client.clone());
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for ep in list {
        let ns = ep.namespace().unwrap_or_default();
        let name = ep.name_any();
        if is_leader_record(&ep) || services.contains(&(ns.clone(), name.clone())) {
            continue;
        }
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        // Re-check: the service may have been created since the list.
        let svc: Api<Service> = Api::namespaced(client.clone(), &ns);
        if let Ok(None) = svc.get_opt(&name).await {
            tracing::debug!(namespace = %ns, name = %name, "deleting leftover endpoints");
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
}

/// A create into a namespace that is being deleted is refused; the
/// namespace's finalization removes everything anyway.
fn namespace_gone(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404
        || (s.code == 403 && s.message.contains("terminat")))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(selector) = selector_of(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pods = pods
        .list(&ListParams::default().labels(&label_selector))
        .await?
        .items;
    pods.sort_by_key(|p| p.name_any());
    let result = async {
        sync_endpoints(&ctx, &svc, &pods).await?;
        let external_name =
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        if !external_name {
            sync_slices(&ctx, &svc, &pods).await?;
        }
        Ok::<_, kube::Error>(())
    }
    .await;
    match result {
        Ok(()) => Ok(Action::await_change()),
        Err(e) if namespace_gone(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

// ---- pod → endpoint facts, as upstream's endpointslice utils ----

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// upstream `ShouldPodBeInEndpoints`.
fn should_include(pod: &Pod, include_terminating: bool) -> bool {
    if pod_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(st) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<String> = st
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty()
        && let Some(ip) = st.pod_ip.as_ref().filter(|ip| !ip.is_empty())
    {
        ips.push(ip.clone());
    }
    ips
}

/// The pod's address of the given family ("IPv4" / "IPv6").
fn pod_ip_of_family(pod: &Pod, family: &str) -> Option<String> {
    pod_ips(pod).into_iter().find(|ip| {
        ip.parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_ipv6() == (family == "IPv6"))
    })
}

/// The service's address families: spec.ipFamilies, else inferred from its
/// cluster IP, else IPv4.
fn service_families(svc: &Service) -> Vec<String> {
    let spec = svc.spec.as_ref();
    if let Some(f) = spec
        .and_then(|s| s.ip_families.clone())
        .filter(|f| !f.is_empty())
    {
        return f;
    }
    let v6 = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .is_some_and(|a| a.is_ipv6());
    vec![if v6 { "IPv6" } else { "IPv4" }.to_string()]
}

fn headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_none_or(|ip| ip.is_empty() || ip == "None")
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// upstream `FindPort`: the container port a service port targets on this
/// pod; named target ports are looked up in the pod's containers (and
/// restartable init containers) with the same protocol.
fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers.iter().chain(sidecars).find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
        Some(IntOrString::Int(0)) | None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
    }
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// upstream `ShouldSetHostname`.
fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.clone())
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// Serialized form with nulls and empty values removed, so that objects
/// compare equal however the server spells absent fields.
fn canon<T: Serialize>(v: &T) -> Value {
    fn strip(v: Value) -> Option<Value> {
        match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::Array(a) => {
                let a: Vec<Value> = a.into_iter().filter_map(strip).collect();
                (!a.is_empty()).then_some(Value::Array(a))
            }
            Value::Object(o) => {
                let o: serde_json::Map<String, Value> = o
                    .into_iter()
                    .filter_map(|(k, v)| strip(v).map(|v| (k, v)))
                    .collect();
                (!o.is_empty()).then_some(Value::Object(o))
            }
            v => Some(v),
        }
    }
    serde_json::to_value(v)
        .ok()
        .and_then(strip)
        .unwrap_or(Value::Null)
}

// ---- Endpoints (core/v1) ----

/// Ports, ready and not-ready addresses of one Endpoints subset.
type AddressGroup = (Vec<CorePort>, Vec<EndpointAddress>, Vec<EndpointAddress>);

async fn sync_endpoints(ctx: &Ctx, svc: &Service, pods: &[Pod]) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let tolerate_unready = publish_not_ready(svc);
    // Only the service's primary family goes into Endpoints.
    let family = service_families(svc).remove(0);
    // Addresses grouped by the exact port list they expose, as
    // `RepackSubsets` leaves them.
    let mut groups: BTreeMap<String, AddressGroup> = BTreeMap::new();
    let mut total = 0usize;
    for pod in pods {
        if !should_include(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ip_of_family(pod, &family) else {
            continue;
        };
        let addr = EndpointAddress {
            ip,
            hostname: hostname_for(pod, svc),
            node_name: node_name(pod),
            target_ref: Some(target_ref(pod)),
        };
        let sports = service_ports(svc);
        let mut ports: Vec<CorePort> = Vec::new();
        for sp in sports {
            match find_port(pod, sp) {
                Some(port) => ports.push(CorePort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                }),
                None => tracing::debug!(
                    pod = %pod.name_any(), service = %name,
                    "no container port matches the service's target port"
                ),
            }
        }
        // A pod none of whose ports resolve is left out, unless the service
        // has no ports at all (headless without ports).
        if ports.is_empty() && !sports.is_empty() {
            continue;
        }
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let key = canon(&ports).to_string();
        let entry = groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        total += 1;
        if tolerate_unready || pod_ready(pod) {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
    }
    // More than 1000 addresses: keep ready ones first and say so.
    let truncated = total > MAX_ENDPOINTS_ADDRESSES;
    if truncated {
        let mut budget = MAX_ENDPOINTS_ADDRESSES;
        for (_, ready, _) in groups.values_mut() {
            ready.truncate(budget);
            budget -= ready.len();
        }
        for (_, _, unready) in groups.values_mut() {
            unready.truncate(budget);
            budget -= unready.len();
        }
    }
    let mut subsets: Vec<EndpointSubset> = groups
        .into_values()
        .filter(|(_, r, u)| !r.is_empty() || !u.is_empty())
        .map(|(ports, mut ready, mut unready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            unready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!unready.is_empty()).then_some(unready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    subsets.sort_by_key(|s| canon(&s.ports).to_string());

    let mut labels = svc.labels().clone();
    labels.insert(LABEL_SKIP_MIRROR.into(), "true".into());
    if headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        labels.remove(LABEL_HEADLESS);
    }

    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match api.get_opt(&name).await? {
        None => {
            let mut annotations = BTreeMap::new();
            if truncated {
                annotations.insert(OVER_CAPACITY.to_string(), "truncated".to_string());
            }
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => Ok(()),
                // Someone else (or an earlier pass) created it: the watch
                // brings us back to compare.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(mut current) => {
            let marked =
                current.annotations().get(OVER_CAPACITY).map(String::as_str) == Some("truncated");
            if canon(&current.subsets) == canon(&subsets)
                && current.labels() == &labels
                && marked == truncated
            {
                return Ok(());
            }
            current.subsets = Some(subsets);
            current.metadata.labels = Some(labels);
            let annotations = current.annotations_mut();
            if truncated {
                annotations.insert(OVER_CAPACITY.into(), "truncated".into());
            } else {
                annotations.remove(OVER_CAPACITY);
            }
            api.replace(&name, &PostParams::default(), &current).await?;
            Ok(())
        }
    }
}

// ---- EndpointSlices (discovery.k8s.io/v1) ----

/// A slice to write: the existing one to update (None: create), its
/// address type, ports and endpoints.
type PlannedSlice = (
    Option<EndpointSlice>,
    String,
    Vec<EndpointPort>,
    Vec<Endpoint>,
);

fn ports_key(ports: &[EndpointPort]) -> String {
    canon(&ports).to_string()
}

/// One desired endpoint, keyed by its pod's uid (or address).
struct Desired {
    key: String,
    endpoint: Endpoint,
}

fn endpoint_key(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone().or_else(|| r.name.clone()))
        .unwrap_or_else(|| e.addresses.join(","))
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                LABEL_SERVICE_NAME | LABEL_MANAGED_BY | LABEL_HEADLESS
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    if headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels
}

fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice.owner_references().iter().any(|o| {
        o.kind == "Service"
            && Some(&o.uid) == svc.metadata.uid.as_ref()
            && o.controller == Some(true)
    })
}

/// Desired endpoints grouped by (address type, port list).
fn desired_slices(
    ctx: &Ctx,
    svc: &Service,
    pods: &[Pod],
) -> BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Desired>)> {
    let mut groups: BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Desired>)> = BTreeMap::new();
    let publish = publish_not_ready(svc);
    for family in service_families(svc) {
        for pod in pods {
            if !should_include(pod, true) {
                continue;
            }
            let Some(ip) = pod_ip_of_family(pod, &family) else {
                continue;
            };
            let sports = service_ports(svc);
            let ports: Vec<EndpointPort> = sports
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: Some(find_port(pod, sp)?),
                        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            if ports.is_empty() && !sports.is_empty() {
                continue;
            }
            let serving = pod_ready(pod);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            // A terminating pod is never "ready" unless the service asks
            // for every address to be published.
            let ready = publish || (serving && !terminating);
            let zone = node_name(pod).and_then(|n| {
                ctx.nodes
                    .get(&ObjectRef::new(&n))
                    .and_then(|node| node.labels().get(LABEL_ZONE).cloned())
            });
            let endpoint = Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: hostname_for(pod, svc),
                node_name: node_name(pod),
                target_ref: Some(target_ref(pod)),
                zone,
                ..Default::default()
            };
            let key = endpoint_key(&endpoint);
            groups
                .entry((family.clone(), ports_key(&ports)))
                .or_insert_with(|| (ports, Vec::new()))
                .1
                .push(Desired { key, endpoint });
        }
    }
    groups
}

async fn sync_slices(ctx: &Ctx, svc: &Service, pods: &[Pod]) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "{LABEL_SERVICE_NAME}={},{LABEL_MANAGED_BY}={MANAGED_BY}",
        svc.name_any()
    );
    let mut existing = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    existing.sort_by_key(|s| s.name_any());
    let families = service_families(svc);
    let (mut mine, foreign): (Vec<EndpointSlice>, Vec<EndpointSlice>) = existing
        .into_iter()
        .partition(|s| owned_by(s, svc) && families.contains(&s.address_type));
    let mut to_delete: Vec<EndpointSlice> = foreign;
    let labels = slice_labels(svc);
    let owner = owner_ref(svc);

    let groups = desired_slices(ctx, svc, pods);
    let total: usize = groups.values().map(|(_, d)| d.len()).sum();
    // Final state: (existing slice or None for a new one, address type,
    // ports, endpoints).
    let mut plan: Vec<PlannedSlice> = Vec::new();
    for ((family, shape), (ports, desired)) in groups {
        let mut by_key: HashMap<String, Endpoint> = desired
            .iter()
            .map(|d| (d.key.clone(), d.endpoint.clone()))
            .collect();
        let order: Vec<String> = desired.iter().map(|d| d.key.clone()).collect();
        // Existing slices of this shape keep the endpoints they already
        // hold, refreshed, so that unchanged endpoints do not move.
        let (same, rest): (Vec<EndpointSlice>, Vec<EndpointSlice>) =
            mine.into_iter().partition(|s| {
                s.address_type == family
                    && ports_key(s.ports.as_deref().unwrap_or_default()) == shape
            });
        mine = rest;
        let mut filled: Vec<(Option<EndpointSlice>, Vec<Endpoint>)> = same
            .into_iter()
            .map(|s| {
                let kept: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| by_key.remove(&endpoint_key(e)))
                    .take(MAX_PER_SLICE)
                    .collect();
                (Some(s), kept)
            })
            .collect();
        // New endpoints go where there is room, then into new slices.
        let mut fresh = order.iter().filter_map(|k| by_key.remove(k)).peekable();
        for (_, eps) in filled.iter_mut() {
            while eps.len() < MAX_PER_SLICE {
                match fresh.next() {
                    Some(e) => eps.push(e),
                    None => break,
                }
            }
        }
        while fresh.peek().is_some() {
            let chunk: Vec<Endpoint> = fresh.by_ref().take(MAX_PER_SLICE).collect();
            filled.push((None, chunk));
        }
        for (slice, eps) in filled {
            if eps.is_empty() {
                to_delete.extend(slice);
            } else {
                plan.push((slice, family.clone(), ports.clone(), eps));
            }
        }
    }
    // Slices whose shape no longer exists.
    to_delete.append(&mut mine);
    if total == 0 {
        // No endpoints: keep exactly one empty placeholder slice, as
        // upstream does, reusing one we already have.
        let family = families.first().cloned().unwrap_or_else(|| "IPv4".into());
        let reuse = to_delete
            .iter()
            .position(|s| s.address_type == family)
            .map(|i| to_delete.remove(i));
        plan.push((reuse, family, Vec::new(), Vec::new()));
    }

    for (slice, family, ports, endpoints) in plan {
        match slice {
            Some(mut s) => {
                let unchanged = canon(&s.endpoints) == canon(&endpoints)
                    && canon(&s.ports) == canon(&ports)
                    && s.labels() == &labels
                    && s.owner_references() == std::slice::from_ref(&owner);
                if unchanged {
                    continue;
                }
                s.endpoints = endpoints;
                s.ports = Some(ports);
                s.metadata.labels = Some(labels.clone());
                s.metadata.owner_references = Some(vec![owner.clone()]);
                api.replace(&s.name_any(), &PostParams::default(), &s)
                    .await?;
            }
            None => {
                let s = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", svc.name_any())),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    address_type: family,
                    endpoints,
                    ports: Some(ports),
                };
                api.create(&PostParams::default(), &s).await?;
            }
        }
    }
    for s in to_delete {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
                "initContainers": [{"name": "side", "restartPolicy": "Always",
                    "ports": [{"name": "metrics", "containerPort": 9090}]}]},
        }))
        .unwrap()
    }

    fn sp(v: serde_json::Value) -> ServicePort {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn target_ports_resolve_like_upstream() {
        let p = pod();
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 80, "targetPort": "http"}))
            ),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &sp(serde_json::json!({"port": 80, "targetPort": 9000}))),
            Some(9000)
        );
        assert_eq!(
            find_port(&p, &sp(serde_json::json!({"port": 80}))),
            Some(80)
        );
        // Protocols must agree.
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 53, "targetPort": "dns"}))
            ),
            None
        );
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))
            ),
            Some(53)
        );
        // Sidecars (restartable init containers) count.
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 1, "targetPort": "metrics"}))
            ),
            Some(9090)
        );
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 1, "targetPort": "nope"}))
            ),
            None
        );
    }

    #[test]
    fn canonical_form_ignores_absent_spellings() {
        let a = EndpointPort {
            name: Some(String::new()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        let b = EndpointPort {
            name: None,
            ..a.clone()
        };
        assert_eq!(canon(&vec![a.clone()]), canon(&vec![b]));
        assert_ne!(
            canon(&vec![a.clone()]),
            canon(&vec![EndpointPort {
                port: Some(81),
                ..a
            }])
        );
        assert_eq!(
            canon(&Some(Vec::<EndpointPort>::new())),
            canon(&None::<Vec<EndpointPort>>)
        );
    }
}
