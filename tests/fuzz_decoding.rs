//! Property test of the request decoding paths: mutated and random bodies
//! in every accepted media type never cause a 5xx, a panic or a
//! half-written object, and the server keeps serving. Deterministic seed,
//! bounded to a few hundred requests so it runs briefly in CI.

mod common;

use common::Server;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                let tokens: [&[u8]; 8] =
                    [b"{", b"}", b"[", b"\"", b":", b"null", b"$patch", b"-1e999"];
                let t = tokens[rng.below(tokens.len())];
                b.splice(i..i, t.iter().copied());
            }
            3 if b.len() > 2 => {
                let i = rng.below(b.len() - 1);
                b.swap(i, i + 1);
            }
            _ => b.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
        }
    }
    b
}

#[tokio::test]
async fn mutated_bodies_never_break_the_server() {
    let s = Server::start();
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let c = kube::Client::try_from(cfg).unwrap();
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let valid = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"fz","labels":{"a":"b"}},"spec":{"replicas":1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i","env":[{"name":"X","value":"1"}]}]}}}}"#;
    let create = http::Request::post(base)
        .header("Content-Type", "application/json")
        .body(valid.to_vec())
        .unwrap();
    c.request_text(create).await.unwrap();

    let cases: Vec<(&str, &str, &[u8])> = vec![
        ("POST", "application/json", valid),
        ("POST", "application/yaml", b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: y\nspec:\n  selector: {matchLabels: {a: b}}\n"),
        ("POST", "application/vnd.kubernetes.protobuf", b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1b\n\x13\n\x03ns2\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00\"\x00"),
        ("PATCH", "application/merge-patch+json", br#"{"spec":{"replicas":3}}"#),
        ("PATCH", "application/strategic-merge-patch+json", br#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"name":"c","env":[{"name":"X","$patch":"delete"}]}]}}}}"#),
        ("PATCH", "application/json-patch+json", br#"[{"op":"replace","path":"/spec/replicas","value":2},{"op":"test","path":"/metadata/name","value":"fz"}]"#),
        ("PATCH", "application/apply-patch+yaml", b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: fz\nspec:\n  replicas: 4\n"),
        ("PUT", "application/json", valid),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut by_code = std::collections::BTreeMap::new();
    for round in 0..60 {
        for (method, ct, seed) in &cases {
            let body = if round == 0 {
                seed.to_vec()
            } else {
                mutate(&mut rng, seed)
            };
            let path = match *method {
                "POST" => base.to_string(),
                _ => format!("{base}/fz?fieldManager=fuzz"),
            };
            let req = http::Request::builder()
                .method(*method)
                .uri(&path)
                .header("Content-Type", *ct)
                .body(body.clone())
                .unwrap();
            let code = match c.request_text(req).await {
                Ok(_) => 200,
                Err(kube::Error::Api(st)) => st.code,
                Err(e) => panic!(
                    "{method} {ct}: transport error {e} for body {:?}",
                    String::from_utf8_lossy(&body)
                ),
            };
            assert!(
                code < 500,
                "{method} {ct} -> {code} for body {:?}",
                String::from_utf8_lossy(&body)
            );
            *by_code.entry(code).or_insert(0) += 1;
        }
    }
    println!("status codes: {by_code:?}");
    assert!(
        by_code.keys().any(|c| (400..500).contains(c)),
        "mutations never produced a client error"
    );
    // The deployment is still a valid, readable object.
    let got = c
        .request_text(
            http::Request::get(format!("{base}/fz"))
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["metadata"]["name"], "fz");
    assert!(
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert_eq!(
        c.request_text(http::Request::get("/readyz").body(vec![]).unwrap())
            .await
            .unwrap(),
        "ok"
    );
}
