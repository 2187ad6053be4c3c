//! Real tests as root: test-unique bridge, pod CIDR and nft table, a temp
//! state dir; a guard runs `remove_all` even when an assertion fails.

use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::*;

/// Sysctls are host-global: tests that save and restore them run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn rand_hex4() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:04x}", h.finish() & 0xffff)
}

struct Fixture {
    config: NetConfig,
    sysctls_before: Vec<Option<String>>,
    _dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

const SYSCTLS: [&str; 2] = ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"];

impl Fixture {
    fn new(pod_cidr: &str) -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tag = rand_hex4();
        Fixture {
            config: NetConfig {
                state_dir: dir.path().join("net"),
                bridge: format!("sktest{tag}"),
                pod_cidr: pod_cidr.into(),
                cluster_cidr: "10.42.0.0/16".into(),
                nft_table: format!("sktest-{tag}"),
            },
            sysctls_before: SYSCTLS.iter().map(|n| sysctl::read(n).unwrap()).collect(),
            _dir: dir,
            _serial: serial,
        }
    }

    fn sysctls_now(&self) -> Vec<Option<String>> {
        SYSCTLS.iter().map(|n| sysctl::read(n).unwrap()).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // We may be inside the test's runtime: clean up from another thread.
        let config = self.config.clone();
        let res = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(remove_all(&config))
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!("network test cleanup failed: {res:?}");
        }
    }
}

async fn link_exists(name: &str) -> bool {
    let nl = Netlink::new().unwrap();
    link::link_index(&nl.handle, name).await.unwrap().is_some()
}

fn nft_table_json(name: &str) -> Option<String> {
    let out = std::process::Command::new("/usr/sbin/nft")
        .args(["-j", "list", "table", "ip", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

fn mountinfo_mentions(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.contains(path.to_str().unwrap())
}

fn lease_files(config: &NetConfig) -> Vec<(Ipv4Addr, String)> {
    ipam::leases_in(&config.ipam_dir()).unwrap()
}

/// Connects from inside `netns` to `to`, sends `msg`.
async fn send_from(netns: &Path, to: SocketAddr, msg: &'static [u8]) {
    run_in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.write_all(msg)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
}

fn accept_and_read(l: &TcpListener, len: usize) -> Vec<u8> {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[tokio::test]
async fn network_two_pods_end_to_end() {
    let fx = Fixture::new("10.42.240.0/24");
    let cfg = fx.config.clone();
    let net = PodNetwork::init(cfg.clone()).await.unwrap();
    assert!(link_exists(&cfg.bridge).await);
    assert_eq!(
        sysctl::read("net.ipv4.ip_forward").unwrap().as_deref(),
        Some("1")
    );

    // The masquerade rule: from the pod CIDR, not to the cluster or pod CIDR.
    let table = nft_table_json(&cfg.nft_table).expect("nft table exists");
    for needle in [
        "\"masquerade\"",
        "\"postrouting\"",
        "\"10.42.240.0\"",
        "\"10.42.0.0\"",
        "\"forward\"",
        cfg.bridge.as_str(),
    ] {
        assert!(table.contains(needle), "{needle} missing from {table}");
    }
    let net = {
        drop(net);
        PodNetwork::init(cfg.clone()).await.unwrap()
    };
    // Re-init (idempotent): still exactly the two masquerade rules (pod
    // traffic leaving, loopback clients of hostPorts).
    let table = nft_table_json(&cfg.nft_table).unwrap();
    assert_eq!(table.matches("\"masquerade\"").count(), 2, "{table}");

    let cidr = Cidr::parse(&cfg.pod_cidr).unwrap();
    let a = net.setup("pod-a", "alpha").await.unwrap();
    let b = net.setup("pod-b", "bravo").await.unwrap();
    assert_ne!(a.ip, b.ip);
    for ip in [a.ip, b.ip] {
        assert!(cidr.contains(ip), "{ip} outside {cidr}");
        assert!(![cidr.network, cidr.gateway(), cidr.broadcast()].contains(&ip));
    }
    assert_eq!(a.gateway, Ipv4Addr::new(10, 42, 240, 1));
    assert_eq!(
        net.setup("pod-a", "alpha").await.unwrap().ip,
        a.ip,
        "setup is idempotent"
    );
    assert_eq!(
        net.sandboxes(),
        vec!["pod-a".to_string(), "pod-b".to_string()]
    );
    assert!(mountinfo_mentions(&a.netns));
    assert!(link_exists(&veth_name("pod-a")).await);
    let hairpin = format!("/sys/class/net/{}/brport/hairpin_mode", veth_name("pod-a"));
    assert_eq!(std::fs::read_to_string(hairpin).unwrap().trim(), "1");
    let mac = format!("/sys/class/net/{}/addr_assign_type", cfg.bridge);
    assert_eq!(
        std::fs::read_to_string(mac).unwrap().trim(),
        "3",
        "bridge MAC is fixed"
    );

    // Hostname lives in the pod's UTS namespace only.
    let name = netns::in_ns(&a.utsns, CloneFlags::CLONE_NEWUTS, || {
        Ok(nix::unistd::gethostname()?.into_string().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(name, "alpha");
    assert_ne!(nix::unistd::gethostname().unwrap(), "alpha");

    // Pod A reaches the gateway (a listener on the bridge address).
    let gw = TcpListener::bind((a.gateway, 0)).unwrap();
    send_from(&a.netns, gw.local_addr().unwrap(), b"gw").await;
    assert_eq!(accept_and_read(&gw, 2), b"gw");

    // Pod B reaches pod A: the listener socket is born in A's netns.
    let a_ip = a.ip;
    let listener = run_in_netns(&a.netns, move || TcpListener::bind((a_ip, 0)))
        .await
        .unwrap()
        .unwrap();
    send_from(&b.netns, listener.local_addr().unwrap(), b"ping").await;
    assert_eq!(accept_and_read(&listener, 4), b"ping");
    // And the pod's loopback is up.
    let lo = run_in_netns(&a.netns, || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let _c = TcpStream::connect(l.local_addr()?)?;
        l.accept().map(|_| ())
    })
    .await
    .unwrap();
    assert!(lo.is_ok(), "{lo:?}");

    // Teardown leaves nothing behind, and can be repeated.
    net.teardown("pod-a").await.unwrap();
    assert!(!link_exists(&veth_name("pod-a")).await);
    assert!(!mountinfo_mentions(&a.netns));
    assert!(!a.netns.parent().unwrap().exists());
    assert!(lease_files(&cfg).iter().all(|(_, uid)| uid != "pod-a"));
    assert!(!cfg.ipam_dir().join(a.ip.to_string()).exists());
    net.teardown("pod-a").await.unwrap();
    assert_eq!(net.sandboxes(), vec!["pod-b".to_string()]);

    // killall: no sandbox, bridge or table; sysctls as they were.
    remove_all(&cfg).await.unwrap();
    assert!(!link_exists(&cfg.bridge).await);
    assert!(!link_exists(&veth_name("pod-b")).await);
    assert!(!mountinfo_mentions(&b.netns));
    assert!(nft_table_json(&cfg.nft_table).is_none());
    assert!(lease_files(&cfg).is_empty());
    assert_eq!(fx.sysctls_now(), fx.sysctls_before);
}

#[tokio::test]
async fn network_restart_keeps_leases_and_repairs() {
    let fx = Fixture::new("10.42.241.0/24");
    let cfg = fx.config.clone();
    let first = PodNetwork::init(cfg.clone()).await.unwrap();
    let a = first.setup("pod-a", "alpha").await.unwrap();
    drop(first);

    // A restarted agent: same state dir, nothing in memory.
    let net = PodNetwork::init(cfg.clone()).await.unwrap();
    assert_eq!(net.sandboxes(), vec!["pod-a".to_string()]);
    assert_eq!(lease_files(&cfg), vec![(a.ip, "pod-a".to_string())]);
    let b = net.setup("pod-b", "bravo").await.unwrap();
    assert_ne!(a.ip, b.ip, "a live address was reused after restart");
    assert_eq!(net.setup("pod-a", "alpha").await.unwrap().ip, a.ip);

    // Setup repairs a sandbox whose veth vanished.
    {
        let nl = Netlink::new().unwrap();
        assert!(
            link::delete_link(&nl.handle, &veth_name("pod-a"))
                .await
                .unwrap()
        );
    }
    assert_eq!(net.setup("pod-a", "alpha").await.unwrap().ip, a.ip);
    let a_ip = a.ip;
    let listener = run_in_netns(&a.netns, move || TcpListener::bind((a_ip, 0)))
        .await
        .unwrap()
        .unwrap();
    send_from(&b.netns, listener.local_addr().unwrap(), b"again").await;
    assert_eq!(accept_and_read(&listener, 5), b"again");

    // A freed address is not handed out next (round-robin).
    net.teardown("pod-a").await.unwrap();
    let c = net.setup("pod-c", "charlie").await.unwrap();
    assert_ne!(c.ip, a.ip);

    // An orphaned lease (no sandbox dir) is dropped at init.
    std::fs::write(cfg.ipam_dir().join("10.42.241.250"), "ghost").unwrap();
    let net = PodNetwork::init(cfg.clone()).await.unwrap();
    assert!(lease_files(&cfg).iter().all(|(_, uid)| uid != "ghost"));
    assert_eq!(
        net.sandboxes(),
        vec!["pod-b".to_string(), "pod-c".to_string()]
    );

    remove_all(&cfg).await.unwrap();
    assert!(net.sandboxes().is_empty());
    assert!(!link_exists(&cfg.bridge).await);
    assert!(nft_table_json(&cfg.nft_table).is_none());
    // Init ran three times; the originals, not our "1", were restored.
    assert_eq!(fx.sysctls_now(), fx.sysctls_before);
}

#[tokio::test]
async fn network_rejects_bad_uid_and_missing_netns() {
    let fx = Fixture::new("10.42.242.0/24");
    let net = PodNetwork::init(fx.config.clone()).await.unwrap();
    for bad in ["", "..", "a/b"] {
        assert!(net.setup(bad, "x").await.is_err(), "{bad:?}");
    }
    let err = run_in_netns(Path::new("/nonexistent/net"), || ())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/net"), "{err:#}");
}

#[tokio::test]
async fn network_host_ports_dnat_to_the_pod_and_go_with_it() {
    let fx = Fixture::new("10.42.241.0/24");
    let cfg = fx.config.clone();
    let net = PodNetwork::init(cfg.clone()).await.unwrap();
    let a = net.setup("pod-hp", "hp").await.unwrap();
    let a_ip = a.ip;
    let listener = run_in_netns(&a.netns, move || TcpListener::bind((a_ip, 0)))
        .await
        .unwrap()
        .unwrap();
    let container_port = listener.local_addr().unwrap().port();
    // A free host port: bound and released on the host.
    let host_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hp = HostPort {
        protocol: "TCP".into(),
        host_ip: None,
        host_port,
        container_port,
    };
    net.set_host_ports("pod-hp", a.ip, std::slice::from_ref(&hp))
        .await
        .unwrap();
    let localnet = format!("net.ipv4.conf.{}.route_localnet", cfg.bridge);
    assert_eq!(sysctl::read(&localnet).unwrap().as_deref(), Some("1"));
    let table = nft_table_json(&cfg.nft_table).unwrap();
    assert!(table.contains("\"dnat\""), "{table}");

    // From the host's loopback, through the output-chain DNAT.
    let to: SocketAddr = (Ipv4Addr::LOCALHOST, host_port).into();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    s.write_all(b"hostport").unwrap();
    assert_eq!(accept_and_read(&listener, 8), b"hostport");

    // Re-init (an agent restart) keeps the mapping.
    drop(net);
    let net = PodNetwork::init(cfg.clone()).await.unwrap();
    assert!(nft_table_json(&cfg.nft_table).unwrap().contains("\"dnat\""));

    net.teardown("pod-hp").await.unwrap();
    let table = nft_table_json(&cfg.nft_table).unwrap();
    assert!(!table.contains("\"dnat\""), "{table}");
    assert!(TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_err());
}
