use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::model::{Endpoint, Proto, ServicePort, service_ports};
use super::rules::{self, Params};

fn svc(v: Value) -> Arc<Service> {
    Arc::new(serde_json::from_value(v).unwrap())
}
fn slice(v: Value) -> Arc<EndpointSlice> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn web() -> Arc<Service> {
    svc(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.20", "type": "NodePort",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
}

fn web_slice() -> Arc<EndpointSlice> {
    slice(json!({
        "metadata": {"name": "web-abc", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.42.0.7"]},
            {"addresses": ["10.42.0.9"], "conditions": {"ready": false, "serving": true}}
        ]
    }))
}

fn params() -> Params {
    Params {
        table: "skiff-proxy".into(),
        cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
        dns: Some((Ipv4Addr::new(10, 43, 0, 10), Ipv4Addr::new(10, 42, 0, 1))),
        existing_sets: Default::default(),
    }
}

#[test]
fn model_keeps_ready_endpoints_per_port() {
    let ports = service_ports(&[web()], &[web_slice()], "n1");
    assert_eq!(ports.len(), 2);
    let dns = ports.iter().find(|p| p.port_name == "dns").unwrap();
    assert_eq!(dns.proto, Proto::Udp);
    assert!(dns.endpoints.is_empty(), "no slice port named dns");
    let http = ports.iter().find(|p| p.port_name == "http").unwrap();
    assert_eq!(http.id(), "default/web/tcp/http");
    assert_eq!(http.cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 20)));
    assert_eq!(http.node_port, Some(30080));
    assert_eq!(
        http.endpoints,
        vec![
            Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, 5),
                port: 8080
            },
            Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, 7),
                port: 8080
            },
        ]
    );
}

#[test]
fn model_skips_external_name_and_reads_affinity() {
    let ext = svc(json!({"metadata": {"name": "x", "namespace": "a"},
        "spec": {"type": "ExternalName", "externalName": "example.invalid"}}));
    let sticky = svc(json!({"metadata": {"name": "s", "namespace": "a"},
        "spec": {"clusterIP": "10.43.1.1", "sessionAffinity": "ClientIP",
            "externalIPs": ["192.0.2.50"],
            "ports": [{"port": 80}]}}));
    let ports = service_ports(&[ext, sticky], &[], "n1");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].affinity_timeout, Some(10800));
    assert_eq!(ports[0].id(), "a/s/tcp/80");
    assert_eq!(ports[0].external_ips, vec![Ipv4Addr::new(192, 0, 2, 50)]);
}

#[test]
fn chain_names_follow_kube_proxy() {
    let n = rules::chain_name("service", "default/web/tcp/http");
    let (kind, rest) = n.split_once('-').unwrap();
    assert_eq!(kind, "service");
    let (hash, readable) = rest.split_once('-').unwrap();
    assert_eq!(hash.len(), 8);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
    );
    assert_eq!(readable, "default/web/tcp/http");
    // Stable, and different for different inputs.
    assert_eq!(n, rules::chain_name("service", "default/web/tcp/http"));
    assert_ne!(n, rules::chain_name("service", "default/web/tcp/https"));
    let long = "x".repeat(400);
    assert!(rules::chain_name("endpoint", &long).len() <= 200);
}

fn find_elements<'a>(doc: &'a Value, map: &str) -> Vec<&'a Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"]["element"].as_object())
        .filter(|e| e["name"] == map)
        .flat_map(|e| e["elem"].as_array().unwrap())
        .collect()
}

fn rules_of<'a>(doc: &'a Value, chain: &str) -> Vec<&'a Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"]["rule"].as_object())
        .filter(|r| r["chain"] == chain)
        .map(|r| &r["expr"])
        .collect()
}

#[test]
fn ruleset_maps_services_endpoints_and_rejects() {
    let ports = service_ports(&[web()], &[web_slice()], "n1");
    let built = rules::build(&params(), &ports);
    let doc = rules::to_json(&built.nft);
    let http = ports.iter().find(|p| p.port_name == "http").unwrap();
    let svc_chain = rules::service_chain(http);
    let ext_chain = rules::external_chain(http);

    let ips = find_elements(&doc, rules::SERVICE_IPS);
    assert_eq!(ips.len(), 1);
    assert_eq!(
        ips[0],
        &json!([{"concat": ["10.43.0.20", "tcp", 80]}, {"goto": {"target": svc_chain}}])
    );
    let nps = find_elements(&doc, rules::SERVICE_NODEPORTS);
    assert_eq!(
        nps,
        vec![&json!([{"concat": ["tcp", 30080]}, {"goto": {"target": ext_chain}}])]
    );
    // The UDP port has no endpoints: rejected, not silently dropped.
    let none = find_elements(&doc, rules::NO_ENDPOINT_SERVICES);
    assert_eq!(
        none,
        vec![&json!([{"concat": ["10.43.0.20", "udp", 53]}, {"goto": {"target": "reject-chain"}}])]
    );

    // Two endpoint chains behind numgen.
    let svc_rules = rules_of(&doc, &svc_chain);
    let lb = svc_rules.last().unwrap().to_string();
    assert!(lb.contains(r#""numgen":{"mode":"random","mod":2"#), "{lb}");
    for ep in &http.endpoints {
        let c = rules::endpoint_chain(http, ep);
        assert!(lb.contains(&c), "{lb} lacks {c}");
        assert!(built.chains.contains(&c));
        let r = rules_of(&doc, &c);
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(&format!(r#""dnat":{{"addr":"{}","port":8080}}"#, ep.ip)),
            "{text}"
        );
        assert!(text.contains("mark-for-masquerade"), "hairpin: {text}");
    }
    assert!(built.chains.contains(&svc_chain) && built.chains.contains(&ext_chain));
    assert!(built.sets.is_empty());
    // The DNS address is DNATed to the node's server.
    let services = serde_json::to_string(&rules_of(&doc, rules::SERVICES)).unwrap();
    assert!(
        services.contains(r#""dnat":{"addr":"10.42.0.1","port":53}"#),
        "{services}"
    );
}

#[test]
fn ruleset_affinity_uses_dynamic_sets() {
    let mut sp = ServicePort {
        namespace: "a".into(),
        name: "s".into(),
        port_name: String::new(),
        proto: Proto::Tcp,
        port: 80,
        cluster_ip: Some(Ipv4Addr::new(10, 43, 1, 1)),
        external_ips: vec![],
        node_port: None,
        affinity_timeout: Some(60),
        endpoints: vec![Endpoint {
            ip: Ipv4Addr::new(10, 42, 0, 3),
            port: 80,
        }],
    };
    let built = rules::build(&params(), std::slice::from_ref(&sp));
    let doc = rules::to_json(&built.nft);
    let set = rules::affinity_set(&sp, &sp.endpoints[0]);
    assert!(built.sets.contains(&set));
    let def = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["add"]["set"]["name"] == set.as_str())
        .expect("affinity set");
    assert_eq!(def["add"]["set"]["timeout"], 60);
    let text = serde_json::to_string(&rules_of(&doc, &rules::service_chain(&sp))).unwrap();
    assert!(text.contains(&format!("@{set}")), "{text}");
    // An existing set is kept as it is (re-adding it would fail).
    let mut p = params();
    p.existing_sets.insert(set.clone());
    let doc = rules::to_json(&rules::build(&p, std::slice::from_ref(&sp)).nft);
    assert!(!doc.to_string().contains(r#""add":{"set""#));
    // Without endpoints nothing per-service is built.
    sp.endpoints.clear();
    let built = rules::build(&params(), &[sp]);
    assert!(built.chains.is_empty() && built.sets.is_empty());
}

/// The kernel accepts what we build (`nft --check` changes nothing).
#[test]
fn ruleset_passes_nft_check() {
    let nft = std::path::Path::new("/usr/sbin/nft");
    if !nft.exists() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let mut sticky = (*web()).clone();
    sticky.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let ports = service_ports(&[Arc::new(sticky)], &[web_slice()], "n1");
    let mut p = params();
    p.table = format!("skiff-proxy-check-{}", std::process::id());
    let built = rules::build(&p, &ports);
    let json = rules::to_json(&built.nft).to_string();
    if let Ok(f) = std::env::var("SKIFF_DUMP_NFT") {
        std::fs::write(f, &json).unwrap();
    }
    let mut child = std::process::Command::new(nft)
        .args(["--check", "-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chains: Vec<String> = built.chains.into_iter().collect();
    let sets: Vec<String> = built.sets.into_iter().collect();
    let cleanup = rules::to_json(&rules::cleanup(&p.table, &chains, &sets)).to_string();
    assert!(cleanup.contains(r#""delete":{"chain""#), "{cleanup}");
}
