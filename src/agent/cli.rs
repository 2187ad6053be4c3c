//! `skiff agent` (join a server) and `skiff killall` (leave the machine clean).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hyper::http;

use super::AgentConfig;
use crate::cli::{AgentArgs, KillallArgs, NodeArgs};

pub const DEFAULT_NFT_TABLE: &str = "skiff-nat";

/// The agent's settings from the node flags.
pub fn config(
    node: &NodeArgs,
    data_dir: &Path,
    cluster_cidr: &str,
    ca_pem: String,
    control_plane: bool,
) -> AgentConfig {
    AgentConfig {
        node_name: node
            .node_name
            .clone()
            .unwrap_or_else(super::default_node_name),
        node_ip: node.node_ip.clone().unwrap_or_else(super::default_node_ip),
        labels: node.node_label.clone(),
        taints: node.node_taint.clone(),
        data_dir: data_dir.to_path_buf(),
        control_plane,
        cluster_cidr: cluster_cidr.to_string(),
        cluster_dns: node.cluster_dns.clone(),
        cluster_domain: node.cluster_domain.clone(),
        streaming_port: node.kubelet_port,
        ca_pem,
        registries: node.private_registry.clone(),
        bridge: node.bridge.clone(),
        nft_table: DEFAULT_NFT_TABLE.into(),
    }
}

/// Records the agent's pid so `skiff killall` can stop it.
pub fn write_pid(data_dir: &Path) {
    let dir = data_dir.join("agent");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("skiff.pid"), std::process::id().to_string());
}

pub fn run_agent(args: AgentArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff-agent")
        .build()?;
    rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (client, ca_pem) = connect(&args).await?;
        write_pid(&args.data_dir);
        tokio::spawn(crate::server::return_free_memory());
        let cfg = config(
            &args.node,
            &args.data_dir,
            &args.cluster_cidr,
            ca_pem,
            false,
        );
        tokio::select! {
            r = super::run(client, cfg) => r,
            _ = shutdown_signal() => Ok(()),
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A client from `--kubeconfig`, or from `--server` + `--token` with the CA
/// fetched from the server and checked against the token's hash. The
/// credentials are tried before anything is started on this machine.
async fn connect(args: &AgentArgs) -> Result<(kube::Client, String)> {
    if let Some(path) = &args.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let ca = kubeconfig_ca(&kc)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)?;
        check_access(
            &client,
            &server,
            "the kubeconfig's credentials",
            "use the server's admin kubeconfig or one it issued",
        )
        .await?;
        let ca = match ca {
            Some(ca) => ca,
            // The kubeconfig trusts the server already; its CA is served there.
            None => client
                .request_text(http::Request::get("/cacerts").body(Vec::new())?)
                .await
                .with_context(|| format!("fetching the CA from {server}"))?,
        };
        return Ok((client, ca));
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        bail!("skiff agent needs --server and --token (or --kubeconfig)");
    };
    let url: http::Uri = server
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme_str() == Some("https") && u.host().is_some())
        .with_context(|| format!("--server {server:?}: expected https://HOST:PORT"))?;
    let ca_pem = fetch_ca(server, token).await?;
    let der = pem_to_der(&ca_pem)?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(vec![der]);
    config.auth_info.token = Some(token.clone().into());
    let client = kube::Client::try_from(config)?;
    check_access(
        &client,
        server,
        "the join token",
        "use the token in the server's <data-dir>/server/token \
         (/var/lib/skiff/server/token by default)",
    )
    .await?;
    Ok((client, ca_pem))
}

/// The cluster CA a kubeconfig names (inline or as a file), if any.
fn kubeconfig_ca(kc: &kube::config::Kubeconfig) -> Result<Option<String>> {
    let current = kc.current_context.as_deref();
    let context = kc
        .contexts
        .iter()
        .find(|c| Some(c.name.as_str()) == current)
        .and_then(|c| c.context.as_ref());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| context.is_some_and(|ctx| ctx.cluster == c.name))
        .or(kc.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(b64) = &cluster.certificate_authority_data {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("the kubeconfig's certificate-authority-data is not base64")?;
        return Ok(Some(String::from_utf8_lossy(&pem).into_owned()));
    }
    if let Some(file) = &cluster.certificate_authority {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("reading the kubeconfig's certificate-authority {file}"))?;
        return Ok(Some(pem));
    }
    Ok(None)
}

/// One authenticated read, so a wrong token or certificate fails here with
/// a plain message instead of after the runtime and network are set up.
async fn check_access(client: &kube::Client, server: &str, what: &str, hint: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    match nodes
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 401 => {
            bail!("{server} rejected {what} (401 Unauthorized): {hint}")
        }
        Err(kube::Error::Api(e)) if e.code == 403 => bail!(
            "{server} does not let {what} manage nodes (403 Forbidden): {}",
            e.message
        ),
        Err(e) => Err(e).with_context(|| format!("reaching the API server at {server}")),
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("CA is not PEM: {e}"))?;
    Ok(p.contents)
}

/// GET /cacerts without trusting the server, then the token decides.
async fn fetch_ca(server: &str, token: &str) -> Result<String> {
    let expected = token
        .strip_prefix("K10")
        .and_then(|t| t.split("::").next())
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("fetching the CA from {url}"))?;
    if !resp.status().is_success() {
        bail!(
            "fetching the CA from {url}: {} (is {server} a skiff server?)",
            resp.status()
        );
    }
    let pem = resp
        .text()
        .await
        .with_context(|| format!("fetching the CA from {url}"))?;
    let got = crate::pki::ca_hash(&pem)
        .with_context(|| format!("{url} did not answer with a CA certificate"))?;
    match expected {
        Some(hash) if got != hash => bail!(
            "the CA of {server} does not match the join token (its sha256 is {got}, the token \
             says {hash}): wrong server, or a token from another cluster"
        ),
        Some(_) => {}
        // A bare secret carries no hash: the CA is trusted on first use, as k3s does.
        None => tracing::warn!(
            ca_sha256 = %got,
            "the join token has no CA hash; trusting the CA {server} presents"
        ),
    }
    Ok(pem)
}

/// Stops the agent, its containers and the runtime keeper, and removes what
/// they set up on the host (pod network, mounts, pod cgroups). The data dir
/// (images, state) stays. Idempotent; fails if something could not be removed.
pub fn killall(args: KillallArgs) -> Result<()> {
    let agent_dir = args.data_dir.join("agent");
    let mut failed = 0;
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            eprintln!("skiff killall: {what}: {e:#}");
            failed += 1;
        }
    };
    // 1. The agent process itself, so it does not recreate what follows.
    note("stopping the agent", kill_agent(&agent_dir));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // 2. Containers and the keeper (one is started if none runs, so
        // containers a dead keeper left are found from its state and killed).
        if agent_dir.join("rt").exists() {
            let r = match super::runtime::Runtime::connect_or_spawn(&agent_dir.join("rt")).await {
                Ok(r) => r.shutdown(true).await,
                Err(e) => Err(e),
            };
            note("stopping containers", r);
        }
        // 3. Network: sandboxes, bridge, nftables.
        let net = super::network::NetConfig {
            state_dir: agent_dir.join("net"),
            bridge: args.bridge.clone(),
            pod_cidr: String::new(),
            cluster_cidr: String::new(),
            nft_table: DEFAULT_NFT_TABLE.into(),
        };
        note("network", super::network::remove_all(&net).await);
        note("service proxy", crate::proxy::remove_table().await);
    });
    // 4. Mounts below the agent dir (rootfs overlays, tmpfs volumes, namespaces).
    note("unmounting", unmount_below(&agent_dir));
    // 5. Pod cgroups.
    remove_cgroup_tree("/kubepods");
    if failed > 0 {
        bail!("{failed} cleanup step(s) failed (see above)");
    }
    println!("skiff killall: node {} is clean", args.data_dir.display());
    Ok(())
}

/// SIGKILLs the process in `skiff.pid` (if it is a skiff) and waits until
/// it is gone.
fn kill_agent(agent_dir: &Path) -> Result<()> {
    let pid_file = agent_dir.join("skiff.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    if let Ok(pid) = text.trim().parse::<i32>()
        && pid > 0
        && pid != std::process::id() as i32
        && std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| e.to_string_lossy().contains("skiff"))
    {
        // SAFETY: plain kill(2) on a pid we read; checked to be a skiff process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        // Gone, or a zombie its parent has yet to reap: it runs no more code.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("process {pid} did not die after SIGKILL");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    std::fs::remove_file(&pid_file).with_context(|| format!("removing {}", pid_file.display()))
}

/// Unmounts everything at or below `dir`, deepest first (lazily: a mount
/// still in use goes away when its last user does).
pub fn unmount_below(dir: &Path) -> Result<()> {
    let prefix = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let prefix = prefix.display().to_string();
    let below =
        |t: &str| t == prefix || t.strip_prefix(&prefix).is_some_and(|r| r.starts_with('/'));
    for attempt in 0..4 {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
            .filter(|t| below(t))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        if attempt == 3 {
            bail!("still mounted: {}", targets.join(", "));
        }
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in &targets {
            let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    Ok(())
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// rmdir every cgroup below `path`, deepest first, in every hierarchy.
pub fn remove_cgroup_tree(path: &str) {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            roots.push(e.path());
        }
    }
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let base = root.join(path.trim_start_matches('/'));
        if !base.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&base, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/odd\\x"), "/odd\\x");
    }
}
