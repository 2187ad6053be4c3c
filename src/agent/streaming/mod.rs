//! The agent's streaming endpoint (port 10250): container logs, exec,
//! attach, port-forward, as the kubelet serves them to the API server.
//!
//! INTERFACE STUB — the implementation replaces the bodies, not the surface.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::agent::runtime::Runtime;

/// A container as the streaming endpoint sees it.
#[derive(Clone, Debug)]
pub struct ContainerRef {
    /// Runtime id (for exec and attach).
    pub id: String,
    /// Current CRI log file.
    pub log_path: PathBuf,
    /// The previous instance's log file (`--previous`), when there was one.
    pub previous_log_path: Option<PathBuf>,
    pub running: bool,
    pub stdin: bool,
    pub tty: bool,
}

/// Errors map to upstream statuses: NotFound → 404, BadRequest → 400.
#[derive(Debug)]
pub enum LookupError {
    NotFound(String),
    BadRequest(String),
}

/// What the kubelet tells the streaming endpoint about its pods.
pub trait Pods: Send + Sync + 'static {
    /// `container` empty = the pod's only (or default-container-annotated) container.
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Result<ContainerRef, LookupError>;
    /// The pod's network namespace file (port-forward connects inside it).
    fn netns(&self, namespace: &str, pod: &str) -> Result<PathBuf, LookupError>;
}

pub struct Config {
    pub bind: std::net::SocketAddr,
    /// PEM of the cluster CA: clients (the API server) must present a certificate it signed.
    pub client_ca_pem: String,
    /// Serving certificate and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
}

pub async fn serve(_config: Config, _pods: Arc<dyn Pods>, _runtime: Runtime) -> Result<()> {
    anyhow::bail!("streaming not implemented")
}
