//! `skiff server`: brings up PKI, the datastore, the watch cache and the
//! API server, bootstraps the cluster's fixed objects and serves.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::api::{self, Api};
use crate::cli::ServerArgs;
use crate::pki;
use crate::store::{self, Backend};

pub fn run(args: ServerArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff")
        .build()?;
    rt.block_on(serve(args))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn serve(args: ServerArgs) -> Result<()> {
    let started = Instant::now();
    if let Some(ep) = args.datastore_endpoint.as_deref().filter(|e| !e.is_empty())
        && !ep.starts_with("sqlite://")
    {
        anyhow::bail!(
            "--datastore-endpoint {ep:?}: only the embedded SQLite datastore is available in this build (empty or sqlite://PATH)"
        );
    }
    let server_dir = args.data_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating {}", server_dir.display()))?;

    let mut sans: Vec<String> = vec![
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "10.43.0.1".into(),
        hostname(),
    ];
    if let Some(a) = &args.advertise_address {
        sans.push(a.clone());
    }
    sans.extend(crate::agent::host_ipv4s().iter().map(|i| i.to_string()));
    sans.extend(args.tls_san.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    let pki = pki::ensure(&server_dir.join("tls"), &sans)?;
    let token = pki::ensure_token(
        &server_dir.join("token"),
        &pki.ca_pem,
        args.token.as_deref(),
    )?;
    let secret = pki::token_secret(&token).unwrap_or("").to_string();

    let db_path = match args
        .datastore_endpoint
        .as_deref()
        .and_then(|e| e.strip_prefix("sqlite://"))
    {
        Some(p) => std::path::PathBuf::from(p),
        None => server_dir.join("db").join("state.db"),
    };
    let backend: Arc<dyn Backend> = Arc::new(
        store::sqlite::open(&db_path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", db_path.display()))?,
    );
    let cache = api::cache::Cache::open(backend.clone())
        .await
        .map_err(|e| anyhow::anyhow!("loading the store: {e}"))?;

    let advertise = args
        .advertise_address
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());
    let api = Api::new(
        cache.clone(),
        secret,
        format!("{advertise}:{}", args.https_listen_port),
    );
    let signer =
        api::tokens::TokenSigner::new(&pki.service_account_key).map_err(|e| anyhow::anyhow!(e))?;
    let _ = api.tokens.set(signer);
    pki::set_served_ca(pki.ca_pem.clone());
    // The API server reaches agents' port 10250 (logs, exec, port-forward)
    // as a cluster admin; agents accept client certificates the CA signed.
    let kubelet_client = api::proxy::KubeletClientConfig::new(
        pki.admin_cert_pem.clone(),
        pki.admin_key_pem.clone(),
        None,
    )?;
    let _ = api.kubelet_client.set(kubelet_client);
    api::lifecycle::bootstrap(&api, args.https_listen_port).await?;

    let addr = format!("{}:{}", args.bind_address, args.https_listen_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let acceptor =
        api::http::tls_acceptor(&pki.ca_pem, &pki.serving_cert_pem, &pki.serving_key_pem)?;

    let mode = u32::from_str_radix(args.write_kubeconfig_mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--write-kubeconfig-mode {:?}", args.write_kubeconfig_mode))?;
    let host = if args.bind_address == "0.0.0.0" || args.bind_address == "::" {
        "127.0.0.1".to_string()
    } else {
        args.bind_address.clone()
    };
    pki::write_kubeconfig(
        &args.write_kubeconfig,
        mode,
        &format!("https://{host}:{}", args.https_listen_port),
        &pki,
    )?;

    tokio::spawn(api::crd::run(api.clone()));
    tokio::spawn(api::lifecycle::run(api.clone()));
    tokio::spawn(return_free_memory());
    tokio::spawn(compaction(
        backend.clone(),
        cache.clone(),
        args.compaction_interval,
    ));
    // Control-plane components are API clients over the in-process transport.
    // They act as cluster admins until RBAC arrives.
    if !args.disable_scheduler {
        let c = api::local::client(api.clone(), "system:kube-scheduler", &["system:masters"]);
        tokio::spawn(crate::scheduler::run(c));
    }
    if !args.disable_controller_manager {
        let mut cm_args = args.kube_controller_manager_arg.clone();
        cm_args.insert(0, format!("cluster-cidr={}", args.cluster_cidr));
        crate::controllers::set_args(&cm_args);
        crate::controllers::set_ca_pem(pki.ca_pem.clone());
        let c = api::local::client(
            api.clone(),
            "system:kube-controller-manager",
            &["system:masters"],
        );
        tokio::spawn(crate::controllers::run(c, {
            // Stable per host and data dir: a restarted server takes its own
            // lease back at once instead of waiting for it to expire.
            use sha2::Digest;
            let dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
            let h = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
            format!("{}_{}", hostname(), &hex::encode(h)[..12])
        }));
    }
    if args.simulate_nodes > 0 {
        let c = api::local::client(api.clone(), "system:node:simulated", &["system:nodes"]);
        tokio::spawn(crate::sim::run(c, args.simulate_nodes));
    }
    // Pods reach the API server through the `kubernetes` Service: publish
    // the address they can connect to (upstream's endpoint reconciler).
    if let Some(ip) = apiserver_endpoint(&args) {
        let c = api::local::client(api.clone(), "system:apiserver", &["system:masters"]);
        tokio::spawn(publish_apiserver_endpoint(c, ip, args.https_listen_port));
    }
    if !args.disable_agent {
        let cfg = crate::agent::cli::config(
            &args.node,
            &args.data_dir,
            &args.cluster_cidr,
            pki.ca_pem.clone(),
            true,
        );
        crate::agent::cli::write_pid(&args.data_dir);
        let c = api::local::client(
            api.clone(),
            &format!("system:node:{}", cfg.node_name),
            &["system:nodes"],
        );
        tokio::spawn(async move {
            if let Err(e) = crate::agent::run(c, cfg).await {
                tracing::error!("node agent: {e:#}");
            }
        });
    }
    tracing::info!(
        "skiff server {} ready on https://{addr} in {} ms (kubeconfig {})",
        crate::cli::VERSION,
        started.elapsed().as_millis(),
        args.write_kubeconfig.display()
    );

    let serve = api::http::serve(listener, acceptor, api.clone());
    tokio::select! {
        _ = serve => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// The address pods use for the API server: `--advertise-address`, else the
/// node's address when listening on all interfaces; none when only loopback
/// is served (pods could not connect to it).
fn apiserver_endpoint(args: &ServerArgs) -> Option<String> {
    let ip = match &args.advertise_address {
        Some(a) => a.clone(),
        None if args.bind_address == "0.0.0.0" || args.bind_address == "::" => {
            crate::agent::default_node_ip()
        }
        None => args.bind_address.clone(),
    };
    let parsed: IpAddr = ip.parse().ok()?;
    (!parsed.is_loopback() && parsed.is_ipv4()).then_some(ip)
}

async fn publish_apiserver_endpoint(client: kube::Client, ip: String, port: u16) {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    let pp = PatchParams::apply("kube-apiserver").force();
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    let eps: kube::Api<Endpoints> = kube::Api::namespaced(client.clone(), "default");
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client, "default");
    for _ in 0..50 {
        let a = eps
            .patch("kubernetes", &pp, &Patch::Apply(&endpoints))
            .await;
        let b = slices.patch("kubernetes", &pp, &Patch::Apply(&slice)).await;
        match (a, b) {
            (Ok(_), Ok(_)) => return,
            (a, b) => tracing::debug!(
                "publishing the API server endpoint: {:?} {:?}",
                a.err(),
                b.err()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// glibc keeps memory freed after a burst (a 10,000-pod rollout) in its
/// heaps, where it still counts as resident; every few seconds, when more
/// than 8 MiB lie free, hand it back (`malloc_trim` releases free pages
/// anywhere in the heap), as Go's scavenger does for Kubernetes' binaries.
pub async fn return_free_memory() {
    const SLACK: usize = 8 << 20;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        // SAFETY: mallinfo2 and malloc_trim only inspect and shrink glibc's
        // heaps; both are thread-safe.
        let info = unsafe { libc::mallinfo2() };
        if info.fordblks > SLACK {
            unsafe { libc::malloc_trim(0) };
            tracing::debug!(
                in_use_mib = info.uordblks >> 20,
                freed_mib = info.fordblks >> 20,
                "returned free heap memory"
            );
        }
    }
}

/// Every interval, drops history older than the revision seen one interval
/// ago (kube-apiserver's scheme), so watchers have at least one interval to
/// resume and the file stays bounded.
async fn compaction(backend: Arc<dyn Backend>, cache: Arc<api::cache::Cache>, interval: u64) {
    let interval = Duration::from_secs(interval.max(1));
    let mut previous = cache.revision();
    loop {
        tokio::time::sleep(interval).await;
        if previous > 0 {
            match backend.compact(previous).await {
                Ok(()) => {
                    cache.compacted(previous);
                    tracing::debug!(revision = previous, "compacted");
                }
                Err(e) => tracing::warn!("compaction at {previous}: {e}"),
            }
        }
        previous = cache.revision();
    }
}
