//! Cluster DNS names (the Kubernetes DNS specification), parsed from a
//! lower-case query name. Pure, for unit tests.

use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// `<svc>.<ns>.svc.<domain>`
    Service { ns: String, svc: String },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<domain>`
    Srv {
        port: String,
        proto: String,
        ns: String,
        svc: String,
    },
    /// `<hostname>.<svc>.<ns>.svc.<domain>`: one endpoint of a headless service.
    Endpoint {
        host: String,
        ns: String,
        svc: String,
    },
    /// `<a-b-c-d>.<ns>.pod.<domain>`
    Pod { ip: Ipv4Addr, ns: String },
    /// `d.c.b.a.in-addr.arpa`
    Ptr(Ipv4Addr),
    /// Anything else under the cluster domain: NXDOMAIN.
    Unknown,
    /// Outside the cluster domain: forwarded.
    External,
}

/// `a-b-c-d` → a.b.c.d
pub fn dashed_ip(label: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        o[i] = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(o))
}

/// `name` without the trailing dot, lower case; `domain` e.g. `cluster.local`.
pub fn parse(name: &str, domain: &str) -> Name {
    let name = name.trim_end_matches('.');
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let o: Vec<&str> = rest.split('.').collect();
        if o.len() == 4 {
            let ip: Option<Vec<u8>> = o.iter().rev().map(|p| p.parse().ok()).collect();
            if let Some(ip) = ip {
                return Name::Ptr(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
            }
        }
        return Name::External;
    }
    let Some(rest) = name.strip_suffix(domain) else {
        return Name::External;
    };
    let rest = match rest.strip_suffix('.') {
        Some(r) => r,
        // The domain itself, or a name that merely ends like it.
        None if rest.is_empty() => return Name::Unknown,
        None => return Name::External,
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let s = |i: usize| labels[i].to_string();
    match labels.as_slice() {
        [svc, ns, "svc"] => Name::Service {
            svc: svc.to_string(),
            ns: ns.to_string(),
        },
        [port, proto, _, _, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            Name::Srv {
                port: port[1..].to_string(),
                proto: proto[1..].to_string(),
                svc: s(2),
                ns: s(3),
            }
        }
        [host, _, _, "svc"] => Name::Endpoint {
            host: host.to_string(),
            svc: s(1),
            ns: s(2),
        },
        [ip, ns, "pod"] => match dashed_ip(ip) {
            Some(ip) => Name::Pod {
                ip,
                ns: ns.to_string(),
            },
            None => Name::Unknown,
        },
        _ => Name::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "cluster.local";

    #[test]
    fn parses_the_kubernetes_dns_schema() {
        assert_eq!(
            parse("kubernetes.default.svc.cluster.local.", D),
            Name::Service {
                ns: "default".into(),
                svc: "kubernetes".into()
            }
        );
        assert_eq!(
            parse("_http._tcp.web.default.svc.cluster.local", D),
            Name::Srv {
                port: "http".into(),
                proto: "tcp".into(),
                ns: "default".into(),
                svc: "web".into()
            }
        );
        assert_eq!(
            parse("web-0.db.prod.svc.cluster.local", D),
            Name::Endpoint {
                host: "web-0".into(),
                ns: "prod".into(),
                svc: "db".into()
            }
        );
        assert_eq!(
            parse("10-42-0-7.default.pod.cluster.local", D),
            Name::Pod {
                ip: Ipv4Addr::new(10, 42, 0, 7),
                ns: "default".into()
            }
        );
        assert_eq!(
            parse("1.0.43.10.in-addr.arpa.", D),
            Name::Ptr(Ipv4Addr::new(10, 43, 0, 1))
        );
    }

    #[test]
    fn unknown_inside_external_outside() {
        for n in [
            "cluster.local",
            "default.svc.cluster.local",
            "svc.cluster.local",
            "nope.cluster.local",
            "300-1-1-1.default.pod.cluster.local",
            "a.b.c.d.e.svc.cluster.local",
        ] {
            assert_eq!(parse(n, D), Name::Unknown, "{n}");
        }
        for n in [
            "example.com",
            "notcluster.local",
            "kubernetes.default",
            "local",
        ] {
            assert_eq!(parse(n, D), Name::External, "{n}");
        }
    }
}
