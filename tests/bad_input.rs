//! Bad input gets the upstream Status error, nothing half-written, and the
//! server keeps serving.

mod common;

use common::Server;
use kube::Client;

/// Sends a raw request; returns (code, reason, message) of the Status error.
async fn fails(
    c: &Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(body)
        .unwrap();
    match c.request_text(req).await {
        Ok(t) => panic!("{method} {path} succeeded: {t}"),
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        Err(e) => panic!("{method} {path}: unexpected error {e}"),
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn every_bad_input_gets_its_status() {
    let s = Server::start();
    let c = s.client().await;
    let json = "application/json";

    let (code, reason, msg) = fails(
        &c,
        "POST",
        CMS,
        json,
        b"{\"metadata\": {\"name\": ".to_vec(),
    )
    .await;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{msg}");

    let (code, reason, msg) = fails(
        &c,
        "POST",
        CMS,
        json,
        br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(
        msg.contains("does not match the expected API version"),
        "{msg}"
    );

    let (code, _, msg) = fails(
        &c,
        "POST",
        CMS,
        json,
        br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    assert!(msg.contains("does not match the expected kind"), "{msg}");

    let (code, reason, msg) = fails(
        &c,
        "POST",
        &format!("{CMS}?fieldValidation=Strict"),
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"datta":{}}"#.to_vec(),
    )
    .await;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(msg, "strict decoding error: unknown field \"datta\"");

    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (code, reason, _) = fails(&c, "POST", CMS, json, big.into_bytes()).await;
    assert_eq!((code, reason.as_str()), (413, "RequestEntityTooLarge"));

    let (code, reason, msg) = fails(
        &c,
        "POST",
        CMS,
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#.to_vec(),
    )
    .await;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with(
            "ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value: \"Not_Valid\""
        ),
        "{msg}"
    );

    let (code, reason, _) =
        fails(&c, "POST", CMS, "application/x-frobnicate", b"{}".to_vec()).await;
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));

    // Stale resourceVersion.
    let ok = http::Request::post(CMS).header("Content-Type", json)
        .body(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good"},"data":{"a":"1"}}"#.to_vec()).unwrap();
    c.request_text(ok).await.unwrap();
    let (code, reason, msg) = fails(&c, "PUT", &format!("{CMS}/good"), json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good","resourceVersion":"1"},"data":{"a":"2"}}"#.to_vec()).await;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(msg.contains("the object has been modified"), "{msg}");

    // Unknown resource and malformed patch.
    let (code, reason, _) =
        fails(&c, "GET", "/api/v1/namespaces/default/frobs", json, vec![]).await;
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _, _) = fails(
        &c,
        "PATCH",
        &format!("{CMS}/good"),
        "application/merge-patch+json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400);

    // Nothing half-written: only the good object exists, unchanged.
    // (kube-root-ca.crt is in every namespace, as upstream.)
    let list = c
        .request_text(
            http::Request::get(format!(
                "{CMS}?fieldSelector=metadata.name%21%3Dkube-root-ca.crt"
            ))
            .body(vec![])
            .unwrap(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(v["items"][0]["data"]["a"], "1");
    // And the server still serves.
    let ready = c
        .request_text(http::Request::get("/readyz").body(vec![]).unwrap())
        .await
        .unwrap();
    assert_eq!(ready, "ok");
}

#[tokio::test]
async fn anonymous_requests_are_unauthorized_except_health() {
    let s = Server::start();
    // A client that trusts the CA but presents no credentials.
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info = Default::default();
    let anon = Client::try_from(cfg).unwrap();
    for p in ["/healthz", "/livez", "/readyz", "/version"] {
        anon.request_text(http::Request::get(p).body(vec![]).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    match anon
        .request_text(
            http::Request::get("/api/v1/namespaces")
                .body(vec![])
                .unwrap(),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized")),
        other => panic!("expected 401, got {other:?}"),
    }
    // A wrong bearer token is refused too; the join token is accepted.
    let token = std::fs::read_to_string(s.dir.path().join("server/token")).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info = kube::config::AuthInfo {
        token: Some(token.trim().to_string().into()),
        ..Default::default()
    };
    let joined = Client::try_from(cfg).unwrap();
    joined
        .request_text(
            http::Request::get("/api/v1/namespaces")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
}
