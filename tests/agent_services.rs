//! Services and cluster DNS on a real node: the agent's nftables proxy
//! (table `ip skiff-proxy`) and its DNS server, driven by kubectl. All
//! traffic stays on this machine: the bridge, pod and service addresses.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{NODE, Server};

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox:test
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30781}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:test
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#;

fn wait_for(what: &str, secs: u64, s: &Server, mut f: impl FnMut() -> bool) {
    s.wait_for(what, secs, || f().then_some(()))
}

fn jsonpath(s: &Server, args: &[&str], path: &str) -> String {
    let mut a: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", &p]);
    String::from_utf8_lossy(&s.kubectl(&a).stdout)
        .trim()
        .to_string()
}

fn cluster_ip(s: &Server, svc: &str) -> String {
    let ip = jsonpath(s, &["get", "svc", svc], "{.spec.clusterIP}");
    assert!(ip.starts_with("10.43."), "{svc}: clusterIP {ip:?}");
    ip
}

/// The bridge gateway: the first address of the node's podCIDR.
fn gateway(s: &Server) -> String {
    let cidr = jsonpath(s, &["get", "node", NODE], "{.spec.podCIDR}");
    let net = cidr.split('/').next().unwrap();
    let mut octets: Vec<u8> = net.split('.').map(|o| o.parse().unwrap()).collect();
    octets[3] += 1;
    format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3])
}

/// GET / from the host; Err(kind) when the connection fails.
fn http_get(addr: &str) -> Result<String, std::io::ErrorKind> {
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut c = TcpStream::connect_timeout(&sock, Duration::from_secs(3)).map_err(|e| e.kind())?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(c, "GET / HTTP/1.0\r\n\r\n").map_err(|e| e.kind())?;
    let mut out = String::new();
    c.read_to_string(&mut out).map_err(|e| e.kind())?;
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Runs a shell script in the client pod; (success, stdout + stderr).
fn in_client(s: &Server, script: &str) -> (bool, String) {
    let out = s.kubectl(&["exec", "client", "--", "sh", "-c", script]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn backends_seen(s: &Server, url: &str, n: usize) -> BTreeSet<String> {
    let script = format!("for i in $(seq {n}); do timeout 5 wget -qO- {url} || echo FAILED; done");
    let (_, out) = in_client(s, &script);
    out.lines().map(|l| l.trim().to_string()).collect()
}

fn web_pods(s: &Server) -> BTreeSet<String> {
    jsonpath(
        s,
        &["get", "pods", "-l", "app=web"],
        "{.items[*].metadata.name}",
    )
    .split_whitespace()
    .map(String::from)
    .collect()
}

fn proxy_table() -> String {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", "ip", "skiff-proxy"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn start_apps(s: &Server) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], APPS);
    wait_for("web ready", 90, s, || {
        jsonpath(s, &["get", "deploy", "web"], "{.status.readyReplicas}") == "2"
    });
    wait_for("client running", 60, s, || {
        jsonpath(s, &["get", "pod", "client"], "{.status.phase}") == "Running"
    });
}

#[test]
fn cluster_ips_node_ports_affinity_and_rejects() {
    let s = Server::start_agent(&[]);
    start_apps(&s);
    let pods = web_pods(&s);
    assert_eq!(pods.len(), 2, "{pods:?}");
    let web = cluster_ip(&s, "web");

    // Pod → ClusterIP → both backends (pods on the same bridge).
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods.is_subset(&seen) {
        seen.extend(backends_seen(&s, &format!("http://{web}"), 10));
        assert!(
            Instant::now() < deadline,
            "backends seen through {web}: {seen:?}, want {pods:?}\n{}",
            proxy_table()
        );
    }
    assert!(!seen.contains("FAILED"), "{seen:?}");

    // Host → ClusterIP (masqueraded from the host's address).
    let body = http_get(&format!("{web}:80")).expect("host to ClusterIP");
    assert!(pods.contains(&body), "{body:?} not in {pods:?}");

    // NodePort on the node's bridge address (kube-proxy's nftables mode,
    // like ours, does not serve NodePorts on 127.0.0.0/8).
    let gw = gateway(&s);
    let body = http_get(&format!("{gw}:30781")).expect("host to NodePort");
    assert!(pods.contains(&body), "{body:?}");
    let (ok, out) = in_client(&s, &format!("timeout 5 wget -qO- http://{gw}:30781"));
    assert!(ok && pods.contains(out.trim()), "pod to NodePort: {out}");

    // No endpoints: refused at once, from the host and from a pod.
    let empty = cluster_ip(&s, "empty");
    let t = Instant::now();
    assert_eq!(
        http_get(&format!("{empty}:80")),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let t = Instant::now();
    let (ok, out) = in_client(&s, &format!("timeout 10 wget -O- http://{empty}"));
    assert!(!ok && out.contains("refused"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // ClientIP affinity: one backend for this client.
    let sticky = cluster_ip(&s, "sticky");
    let got = backends_seen(&s, &format!("http://{sticky}"), 12);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(pods.is_superset(&got), "{got:?}");

    // Scale to zero: refused; back to two: served again.
    s.kubectl_ok(&["scale", "deployment", "web", "--replicas=0"]);
    wait_for("ClusterIP refused at zero replicas", 60, &s, || {
        http_get(&format!("{web}:80")) == Err(std::io::ErrorKind::ConnectionRefused)
    });
    s.kubectl_ok(&["scale", "deployment", "web", "--replicas=2"]);
    wait_for("ClusterIP served again", 90, &s, || {
        http_get(&format!("{web}:80")).is_ok_and(|b| !b.is_empty())
    });

    // Deleting a Service removes its chains.
    assert!(proxy_table().contains("-default/web/tcp/http"));
    s.kubectl_ok(&["delete", "svc", "web"]);
    wait_for("web's chains removed", 30, &s, || {
        !proxy_table().contains("-default/web/tcp/http")
    });
    assert!(proxy_table().contains("-default/web-np/tcp/80"));
}

#[test]
fn cluster_dns_resolves_services_pods_and_nxdomain() {
    let s = Server::start_agent(&[]);
    // The DNS address is reserved by a kube-dns Service, as in k3s.
    assert_eq!(
        jsonpath(
            &s,
            &["get", "svc", "-n", "kube-system", "kube-dns"],
            "{.spec.clusterIP}"
        ),
        "10.43.0.10"
    );
    start_apps(&s);
    let pods = web_pods(&s);

    // (busybox's nslookup ignores the search path: names are given whole,
    // so no query leaves for the node's upstream servers.)
    let (ok, out) = in_client(&s, "nslookup kubernetes.default.svc.cluster.local");
    assert!(ok && out.contains("10.43.0.1"), "{out}");
    let web = cluster_ip(&s, "web");
    let (ok, out) = in_client(&s, "nslookup web.default.svc.cluster.local 10.43.0.10");
    assert!(ok && out.contains(&web), "{out}");
    // Unknown names under the cluster domain: NXDOMAIN, answered at once.
    let (ok, out) = in_client(&s, "nslookup nope.default.svc.cluster.local 10.43.0.10");
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    // SRV for a named port.
    let (ok, out) = in_client(
        &s,
        "nslookup -type=SRV _http._tcp.web.default.svc.cluster.local 10.43.0.10",
    );
    assert!(ok && out.contains("web.default.svc.cluster.local"), "{out}");
    // Pod records.
    let (ok, out) = in_client(
        &s,
        "nslookup 10-42-0-99.default.pod.cluster.local 10.43.0.10",
    );
    assert!(ok && out.contains("10.42.0.99"), "{out}");

    // The search path (libc resolver, ndots:5): the short name is tried
    // as web.default.svc.cluster.local first and answered there.
    let (ok, out) = in_client(&s, "timeout 5 wget -qO- http://web");
    assert!(ok && pods.contains(out.trim()), "{out}");

    // DNS + proxy: the service name reaches both backends.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods.is_subset(&seen) {
        seen.extend(backends_seen(
            &s,
            "http://web.default.svc.cluster.local",
            10,
        ));
        assert!(
            Instant::now() < deadline,
            "backends seen by name: {seen:?}, want {pods:?}"
        );
    }
}
