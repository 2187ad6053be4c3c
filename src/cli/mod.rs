//! The command line: `skiff server`, `skiff --version`.
//!
//! Flag names follow k3s. Precedence: command-line flag > `SKIFF_*`
//! environment variable > config file (`--config`, YAML keyed by long flag
//! names) > built-in default.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser, Debug)]
#[command(name = "skiff", version, about = "Kubernetes as one executable")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control plane: API server and datastore.
    Server(ServerArgs),
    /// Run a node agent that joins a server.
    Agent(AgentArgs),
    /// Stop every pod of this node and remove the agent's mounts, interfaces and nftables state.
    Killall(KillallArgs),
    /// Manage the node's images: list, pull, import, remove, inspect, gc.
    Images(crate::agent::images::cli::ImagesArgs),
    /// The container runtime's helper process (started by the agent).
    #[command(name = "__runtime-keeper", hide = true)]
    RuntimeKeeper {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Config file (YAML; keys are long flag names).
    #[arg(
        long,
        short = 'c',
        env = "SKIFF_CONFIG_FILE",
        default_value = "/etc/skiff/config.yaml"
    )]
    pub config: PathBuf,
    /// Folder for state.
    #[arg(
        long,
        short = 'd',
        env = "SKIFF_DATA_DIR",
        default_value = "/var/lib/skiff"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SKIFF_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// HTTPS port of the API server.
    #[arg(long, env = "SKIFF_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server advertises to members of the cluster.
    #[arg(long, env = "SKIFF_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// Extra subject alternative names for the serving certificate (repeatable).
    #[arg(long, env = "SKIFF_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig.
    #[arg(
        long,
        short = 'o',
        env = "SKIFF_KUBECONFIG_OUTPUT",
        default_value = "/etc/skiff/skiff.yaml"
    )]
    pub write_kubeconfig: PathBuf,
    /// File mode of the admin kubeconfig, octal.
    #[arg(long, env = "SKIFF_KUBECONFIG_MODE", default_value = "0600")]
    pub write_kubeconfig_mode: String,
    /// Shared secret for joining nodes (generated when empty).
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// Datastore: empty = embedded SQLite.
    #[arg(long, env = "SKIFF_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// Run no embedded node agent.
    #[arg(long, env = "SKIFF_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// Verbose logs.
    #[arg(long, env = "SKIFF_DEBUG")]
    pub debug: bool,
    /// Log format: text or json.
    #[arg(long, env = "SKIFF_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Do not run the scheduler.
    #[arg(long, env = "SKIFF_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,
    /// Do not run the controllers.
    #[arg(long, env = "SKIFF_DISABLE_CONTROLLER_MANAGER")]
    pub disable_controller_manager: bool,
    /// Register this many simulated nodes (kubemark-style; testing and benchmarks).
    #[arg(long, env = "SKIFF_SIMULATE_NODES", default_value_t = 0)]
    pub simulate_nodes: usize,
    /// Seconds between store compactions (history older than one interval is dropped).
    #[arg(long, env = "SKIFF_COMPACTION_INTERVAL", default_value_t = 300)]
    pub compaction_interval: u64,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Pod network of the whole cluster.
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Customized flag for the controllers, KEY=VALUE with upstream
    /// kube-controller-manager flag names (repeatable), as in k3s.
    #[arg(long = "kube-controller-manager-arg", value_name = "KEY=VALUE")]
    pub kube_controller_manager_arg: Vec<String>,
}

/// Node flags shared by `skiff server` (its embedded agent) and `skiff agent`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node name (default: the host name).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// IPv4 address to advertise for the node (default: the first non-loopback address).
    #[arg(long, env = "SKIFF_NODE_IP")]
    pub node_ip: Option<String>,
    /// Label to register the node with, KEY=VALUE (repeatable).
    #[arg(long = "node-label")]
    pub node_label: Vec<String>,
    /// Taint to register the node with, KEY=VALUE:EFFECT (repeatable).
    #[arg(long = "node-taint")]
    pub node_taint: Vec<String>,
    /// Port of the agent's streaming endpoint (logs, exec, port-forward).
    #[arg(long, env = "SKIFF_KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Cluster DNS address written into pods' resolv.conf.
    #[arg(long, env = "SKIFF_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: String,
    /// Cluster domain.
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Private registry configuration (k3s format).
    #[arg(
        long,
        env = "SKIFF_PRIVATE_REGISTRY",
        default_value = "/etc/skiff/registries.yaml"
    )]
    pub private_registry: PathBuf,
    /// Bridge the pods attach to.
    #[arg(long, env = "SKIFF_BRIDGE", default_value = "skiff0", hide = true)]
    pub bridge: String,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Server to join, https://HOST:6443.
    #[arg(long, short = 's', env = "SKIFF_URL")]
    pub server: Option<String>,
    /// Join token (the server's /var/lib/skiff/server/token).
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// Use this kubeconfig instead of --server/--token (e.g. the admin kubeconfig).
    #[arg(long, env = "SKIFF_AGENT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Folder for state.
    #[arg(
        long,
        short = 'd',
        env = "SKIFF_DATA_DIR",
        default_value = "/var/lib/skiff"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Pod network of the whole cluster (not masqueraded between nodes).
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Verbose logs.
    #[arg(long, env = "SKIFF_DEBUG")]
    pub debug: bool,
    /// Log format: text or json.
    #[arg(long, env = "SKIFF_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

#[derive(Args, Debug, Clone)]
pub struct KillallArgs {
    /// Folder for state.
    #[arg(
        long,
        short = 'd',
        env = "SKIFF_DATA_DIR",
        default_value = "/var/lib/skiff"
    )]
    pub data_dir: PathBuf,
    /// Bridge the pods attach to.
    #[arg(long, env = "SKIFF_BRIDGE", default_value = "skiff0", hide = true)]
    pub bridge: String,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server(args) => {
            let args = with_config_file(args)?;
            if !args.disable_agent {
                crate::agent::runtime::fork_standby(&keeper_dir(&args.data_dir));
            }
            init_logging(args.debug, &args.log_format);
            crate::server::run(args)
        }
        Command::Images(args) => crate::agent::images::cli::run(args),
        Command::Agent(args) => {
            crate::agent::runtime::fork_standby(&keeper_dir(&args.data_dir));
            init_logging(args.debug, &args.log_format);
            crate::agent::cli::run_agent(args)
        }
        Command::Killall(args) => crate::agent::cli::killall(args),
        Command::RuntimeKeeper { state_dir } => crate::agent::runtime::keeper_main(&state_dir),
    }
}

/// The runtime keeper's state dir for a node with `data_dir`; forked here,
/// before any thread, because libcontainer needs a single-threaded process.
fn keeper_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("agent").join("rt")
}

/// Fills every flag that came from its default (not the command line nor the
/// environment) from the config file, when the file exists.
fn with_config_file(args: ServerArgs) -> Result<ServerArgs> {
    let path = args.config.clone();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(args),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: serde_yaml::Mapping = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing config file {}", path.display()))?;
    // Re-parse the real argv to learn which values were given explicitly.
    let matches = Cli::command().get_matches();
    let sub = match matches.subcommand() {
        Some(("server", m)) => m.clone(),
        _ => return Ok(args),
    };
    let mut argv: Vec<String> = vec!["server".into()];
    for (key, value) in file {
        let key = key
            .as_str()
            .with_context(|| format!("config file {}: keys must be strings", path.display()))?
            .to_string();
        let id = key.replace('-', "_");
        let explicit = matches!(
            sub.value_source(&id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        );
        if explicit {
            continue;
        }
        let values: Vec<String> = match value {
            serde_yaml::Value::Sequence(s) => s.iter().map(yaml_scalar).collect::<Result<_>>()?,
            v => vec![yaml_scalar(&v)?],
        };
        for v in values {
            if v == "true" && is_bool_flag(&id) {
                argv.push(format!("--{key}"));
            } else if v == "false" && is_bool_flag(&id) {
            } else {
                argv.push(format!("--{key}={v}"));
            }
        }
    }
    let from_file = ServerArgs::from_arg_matches(
        &ServerArgsOnly::command()
            .try_get_matches_from(&argv)
            .with_context(|| format!("config file {}", path.display()))?,
    )?;
    let mut merged = args;
    macro_rules! take {
        ($($f:ident),*) => {$(
            if !matches!(sub.value_source(stringify!($f)), Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)) {
                merged.$f = from_file.$f.clone();
            }
        )*};
    }
    take!(
        data_dir,
        bind_address,
        https_listen_port,
        advertise_address,
        tls_san,
        write_kubeconfig,
        write_kubeconfig_mode,
        token,
        datastore_endpoint,
        disable_agent,
        debug,
        log_format,
        compaction_interval,
        disable_scheduler,
        disable_controller_manager,
        simulate_nodes,
        kube_controller_manager_arg,
        cluster_cidr
    );
    macro_rules! take_node {
        ($($f:ident),*) => {$(
            if !matches!(sub.value_source(stringify!($f)), Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)) {
                merged.node.$f = from_file.node.$f.clone();
            }
        )*};
    }
    take_node!(
        node_name,
        node_ip,
        node_label,
        node_taint,
        kubelet_port,
        cluster_dns,
        cluster_domain,
        private_registry,
        bridge
    );
    Ok(merged)
}

fn is_bool_flag(id: &str) -> bool {
    matches!(
        id,
        "disable_agent" | "debug" | "disable_scheduler" | "disable_controller_manager"
    )
}

fn yaml_scalar(v: &serde_yaml::Value) -> Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => anyhow::bail!("unsupported config value {other:?}"),
    })
}

/// Parser for the server flags alone, used to read the config file's values
/// through the same definitions (and defaults) as the command line.
#[derive(Parser, Debug)]
#[command(name = "server", no_binary_name = false)]
struct ServerArgsOnly {
    #[command(flatten)]
    args: ServerArgs,
}

fn init_logging(debug: bool, format: &str) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "skiff=debug,info" } else { "info" };
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
