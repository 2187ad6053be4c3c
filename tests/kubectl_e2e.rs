//! The real kubectl (1.33 via the dispatcher) against a real `skiff server`.

mod common;

use common::Server;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/demo.yaml");
const WIDGET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/widget.yaml");

fn kubectl_cmd(s: &Server, args: &[&str]) -> std::process::Command {
    let home = s.dir.path().join("home");
    let _ = std::fs::create_dir_all(&home);
    let mut cmd = std::process::Command::new("/usr/bin/kubectl");
    cmd.args(args)
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", &home)
        .current_dir(s.dir.path());
    cmd
}

/// A long-running kubectl (e.g. `get -w`) with captured output.
fn kubectl_spawn(s: &Server, args: &[&str]) -> std::process::Child {
    kubectl_cmd(s, args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl")
}

fn kubectl_env(s: &Server, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = kubectl_cmd(s, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl")
}

fn wait_established(s: &Server) {
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
}

#[test]
fn version_reports_133() {
    let s = Server::start();
    let out = s.kubectl_ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "33");
    assert!(
        v["clientVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.33")
    );
}

#[test]
fn apply_multi_document_then_unchanged_then_server_side() {
    let s = Server::start();
    let out = s.kubectl_ok(&["apply", "-f", DEMO]);
    for line in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/web-config created",
        "secret/web-secret created",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
    wait_established(&s);
    let out = s.kubectl_ok(&["apply", "-f", WIDGET]);
    assert!(out.contains("widget.example.com/gizmo created"), "{out}");
    let out = s.kubectl_ok(&["apply", "-f", DEMO]);
    assert_eq!(out.matches("unchanged").count(), 4, "{out}");
    // As upstream: stringData always yields a patch, so the Secret reads "configured".
    assert!(out.contains("secret/web-secret configured"), "{out}");
    let out = s.kubectl_ok(&["apply", "-f", WIDGET]);
    assert!(out.contains("widget.example.com/gizmo unchanged"), "{out}");
    let out = s.kubectl_ok(&["apply", "--server-side", "-f", WIDGET]);
    assert!(
        out.contains("widget.example.com/gizmo serverside-applied"),
        "{out}"
    );
    // The secret's stringData became base64 data.
    let pw = s.kubectl_ok(&[
        "get",
        "secret",
        "web-secret",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(pw.trim(), "czNjcmV0");
    // The service got a cluster IP from the service CIDR.
    let ip = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.43."), "{ip}");
    // A schema-violating custom object is refused.
    let bad = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  size: \"big\"\n",
    );
    assert!(!bad.status.success(), "string size accepted");
}

#[test]
fn diff_reports_changes_only() {
    let s = Server::start();
    s.kubectl_ok(&["apply", "-f", DEMO]);
    let same = s.kubectl(&["diff", "-f", DEMO]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let changed = std::fs::read_to_string(DEMO)
        .unwrap()
        .replace("greeting: hello", "greeting: bye");
    let path = s.dir.path().join("changed.yaml");
    std::fs::write(&path, changed).unwrap();
    let out = s.kubectl(&["diff", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-  greeting: hello") && text.contains("+  greeting: bye"),
        "{text}"
    );
    // diff is a dry run: nothing changed on the server.
    let g = s.kubectl_ok(&["get", "cm", "web-config", "-o", "jsonpath={.data.greeting}"]);
    assert_eq!(g, "hello");
}

#[test]
fn get_output_formats_and_selectors() {
    let s = Server::start();
    s.kubectl_ok(&["apply", "-f", DEMO]);
    s.kubectl_ok(&["create", "namespace", "other"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "elsewhere",
        "-n",
        "other",
        "--from-literal=k=v",
    ]);
    s.kubectl_ok(&["label", "cm", "elsewhere", "-n", "other", "tier=back"]);

    let table = s.kubectl_ok(&["get", "deploy"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.contains("web"));
    let wide = s.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("SELECTOR"), "{wide}");
    assert!(wide.contains("registry.local/web:1.0"), "{wide}");
    let svc = s.kubectl_ok(&["get", "svc", "web"]);
    assert!(svc.contains("80/TCP") && svc.contains("ClusterIP"), "{svc}");
    let cm = s.kubectl_ok(&["get", "cm", "web-config"]);
    assert!(cm.lines().next().unwrap().contains("DATA"), "{cm}");

    let yaml = s.kubectl_ok(&["get", "cm", "web-config", "-o", "yaml"]);
    assert!(
        yaml.contains("greeting: hello") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "cm", "web-config", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["greeting"], "hello");
    assert!(json["metadata"]["uid"].as_str().unwrap().len() == 36);
    let names = s.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(
        names.lines().any(|l| l == "configmap/web-config"),
        "{names}"
    );

    // -A shows the namespace column from the row metadata.
    let all = s.kubectl_ok(&["get", "cm", "-A"]);
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("other") && l.contains("elsewhere")),
        "{all}"
    );
    // Label selector.
    let sel = s.kubectl_ok(&["get", "cm", "-A", "-l", "tier=back", "-o", "name"]);
    assert_eq!(sel.trim(), "configmap/elsewhere");
    let none = s.kubectl_ok(&["get", "cm", "-A", "-l", "tier=front", "-o", "name"]);
    assert_eq!(none.trim(), "");
    // --show-labels comes from the row metadata.
    let labels = s.kubectl_ok(&["get", "cm", "elsewhere", "-n", "other", "--show-labels"]);
    assert!(labels.contains("tier=back"), "{labels}");
    // Field selector.
    let f = s.kubectl_ok(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=web-config",
        "-o",
        "name",
    ]);
    assert_eq!(f.trim(), "configmap/web-config");
    let bad = s.kubectl(&["get", "cm", "--field-selector", "spec.nope=1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("field label not supported"));
    // jsonpath over a list.
    let jp = s.kubectl_ok(&[
        "get",
        "deploy",
        "-o",
        "jsonpath={.items[*].spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(jp, "registry.local/web:1.0");
    // Pagination through kubectl's chunking.
    for i in 0..7 {
        s.kubectl_ok(&["create", "configmap", &format!("page-{i}")]);
    }
    let chunked = s.kubectl_ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    assert_eq!(
        chunked.lines().filter(|l| l.contains("page-")).count(),
        7,
        "{chunked}"
    );
}

#[test]
fn watch_receives_events() {
    let s = Server::start();
    let mut child = kubectl_spawn(&s, &["get", "cm", "-w", "--output-watch-events"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kubectl_ok(&["create", "configmap", "seen", "--from-literal=a=b"]);
    s.kubectl_ok(&["delete", "configmap", "seen"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ADDED") && l.contains("seen")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("DELETED") && l.contains("seen")),
        "{text}"
    );
}

#[test]
fn describe_label_annotate_patch_edit_replace_scale() {
    let s = Server::start();
    s.kubectl_ok(&["apply", "-f", DEMO]);
    let d = s.kubectl_ok(&["describe", "deploy", "web"]);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("registry.local/web:1.0"),
        "{d}"
    );

    s.kubectl_ok(&["label", "deploy", "web", "tier=front"]);
    s.kubectl_ok(&["annotate", "deploy", "web", "note=hello"]);
    let m = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier}/{.metadata.annotations.note}",
    ]);
    assert_eq!(m, "front/hello");
    s.kubectl_ok(&["label", "deploy", "web", "tier-"]);
    let m = s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert!(!m.contains("tier"), "{m}");
    let gen1 = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(gen1, "1", "metadata-only changes must not bump generation");

    // Strategic merge: env merges by name, keeping the existing entry.
    s.kubectl_ok(&["patch", "deploy", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#]);
    let env = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    // Upstream places new merge-list items before the existing ones.
    assert_eq!(env, "EXTRA MODE");
    let gen2 = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(gen2, "2");
    // Merge patch replaces lists wholesale.
    s.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    // JSON patch with a failing test op is refused.
    let bad = s.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99}]"#,
    ]);
    assert!(!bad.status.success());
    s.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}/{.spec.minReadySeconds}"
        ]),
        "4/5"
    );

    // edit through KUBE_EDITOR.
    let editor = s.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/greeting: hello/greeting: edited/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", editor.to_str().unwrap()])
        .status()
        .unwrap();
    let out = kubectl_env(
        &s,
        &["edit", "cm", "web-config"],
        &[("KUBE_EDITOR", editor.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "web-config", "-o", "jsonpath={.data.greeting}"]),
        "edited"
    );

    // replace with the current object.
    let yaml = s
        .kubectl_ok(&["get", "cm", "web-config", "-o", "yaml"])
        .replace("greeting: edited", "greeting: replaced");
    let out = s.kubectl_stdin(&["replace", "-f", "-"], &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "web-config", "-o", "jsonpath={.data.greeting}"]),
        "replaced"
    );
    // replace with the stale resourceVersion conflicts.
    let out = s.kubectl_stdin(&["replace", "-f", "-"], &yaml);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the object has been modified"));

    s.kubectl_ok(&["scale", "deploy", "web", "--replicas=6"]);
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "6"
    );
}

#[test]
fn create_generators_wait_explain_discovery_whoami() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "team"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        "team",
        "--from-literal=user=admin",
    ]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "team",
        "--image=registry.local/api:2",
        "--replicas=3",
        "--port=80",
    ]);
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "cfg", "-n", "team", "-o", "jsonpath={.data.b}"]),
        "2"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "secret",
            "sec",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.user}"
        ]),
        "YWRtaW4="
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "deploy",
            "api",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "3 80"
    );
    // A namespaced object in a missing namespace is refused.
    let out = s.kubectl(&["create", "configmap", "x", "-n", "missing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespaces \"missing\" not found"));

    s.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.data.a}=1",
        "cm/cfg",
        "-n",
        "team",
        "--timeout=5s",
    ]);
    let ex = s.kubectl_ok(&["explain", "pods.spec.containers.ports"]);
    assert!(ex.contains("containerPort"), "{ex}");
    let res = s.kubectl_ok(&["api-resources"]);
    for r in [
        "deployments",
        "customresourcedefinitions",
        "horizontalpodautoscalers",
        "leases",
        "endpointslices",
    ] {
        assert!(res.contains(r), "{r} missing from api-resources");
    }
    let vers = s.kubectl_ok(&["api-versions"]);
    for gv in [
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
        "v1",
    ] {
        assert!(vers.lines().any(|l| l == gv), "{gv} missing");
    }
    let who = s.kubectl_ok(&["auth", "whoami"]);
    assert!(
        who.contains("system:admin") && who.contains("system:masters"),
        "{who}"
    );
    assert_eq!(
        s.kubectl_ok(&["auth", "can-i", "create", "deployments"])
            .trim(),
        "yes"
    );
}

#[test]
fn delete_cascades_and_namespace_empties() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "gone"]);
    s.kubectl_ok(&["create", "configmap", "a", "-n", "gone"]);
    s.kubectl_ok(&["create", "configmap", "owner"]);
    let uid = s.kubectl_ok(&["get", "cm", "owner", "-o", "jsonpath={.metadata.uid}"]);
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {uid}\n"
    );
    assert!(
        s.kubectl_stdin(&["create", "-f", "-"], &dependent)
            .status
            .success()
    );
    // Orphan: the dependent stays, without its owner reference.
    s.kubectl_ok(&["delete", "cm", "owner", "--cascade=orphan", "--timeout=10s"]);
    let refs = s.kubectl_ok(&[
        "get",
        "cm",
        "dep",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert_eq!(refs.trim(), "");
    // Background: the dependent goes with the owner.
    s.kubectl_ok(&["create", "configmap", "owner2"]);
    let uid2 = s.kubectl_ok(&["get", "cm", "owner2", "-o", "jsonpath={.metadata.uid}"]);
    let dep2 = dependent
        .replace("name: dep\n", "name: dep2\n")
        .replace("name: owner\n", "name: owner2\n")
        .replace(&uid, &uid2);
    assert!(
        s.kubectl_stdin(&["create", "-f", "-"], &dep2)
            .status
            .success()
    );
    s.kubectl_ok(&["delete", "cm", "owner2"]);
    let mut gone = false;
    for _ in 0..50 {
        if !s.kubectl(&["get", "cm", "dep2"]).status.success() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "background cascade left the dependent");
    // Foreground: kubectl waits until dependents are gone, then the owner.
    s.kubectl_ok(&["create", "configmap", "owner3"]);
    let uid3 = s.kubectl_ok(&["get", "cm", "owner3", "-o", "jsonpath={.metadata.uid}"]);
    // Controllers set blockOwnerDeletion on what they create.
    let dep3 = dependent
        .replace("name: dep\n", "name: dep3\n")
        .replace("name: owner\n", "name: owner3\n")
        .replace(&uid, &uid3)
        .replace("    uid: ", "    blockOwnerDeletion: true\n    uid: ");
    assert!(
        s.kubectl_stdin(&["create", "-f", "-"], &dep3)
            .status
            .success()
    );
    s.kubectl_ok(&[
        "delete",
        "cm",
        "owner3",
        "--cascade=foreground",
        "--timeout=10s",
    ]);
    assert!(!s.kubectl(&["get", "cm", "dep3"]).status.success());
    // Foreground with a dependent a finalizer holds: a blockOwnerDeletion
    // dependent keeps the owner until it is gone; one without does not.
    let held = |name: &str, owner: &str, owner_uid: &str, block: bool| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  finalizers: [example.com/hold]\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {owner_uid}\n    blockOwnerDeletion: {block}\n"
        )
    };
    let gone_within = |args: &[&str], secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while s.kubectl(args).status.success() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        true
    };
    let unhold = |name: &str| {
        s.kubectl_ok(&[
            "patch",
            "cm",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    };
    s.kubectl_ok(&["create", "configmap", "owner4"]);
    let uid4 = s.kubectl_ok(&["get", "cm", "owner4", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &held("dep4", "owner4", &uid4, false),
    );
    s.kubectl_ok(&[
        "delete",
        "cm",
        "owner4",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert!(
        gone_within(&["get", "cm", "owner4"], 10),
        "a non-blocking dependent held its owner"
    );
    let dep4 = s.kubectl_ok(&[
        "get",
        "cm",
        "dep4",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!dep4.trim().is_empty(), "the dependent was not deleted");
    unhold("dep4");
    assert!(gone_within(&["get", "cm", "dep4"], 10));
    s.kubectl_ok(&["create", "configmap", "owner5"]);
    let uid5 = s.kubectl_ok(&["get", "cm", "owner5", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_stdin_ok(&["create", "-f", "-"], &held("dep5", "owner5", &uid5, true));
    s.kubectl_ok(&[
        "delete",
        "cm",
        "owner5",
        "--cascade=foreground",
        "--wait=false",
    ]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let owner5 = s.kubectl_ok(&[
        "get",
        "cm",
        "owner5",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(owner5.contains("foregroundDeletion"), "{owner5}");
    unhold("dep5");
    assert!(gone_within(&["get", "cm", "dep5"], 10));
    assert!(
        gone_within(&["get", "cm", "owner5"], 10),
        "owner kept after its blocking dependent went"
    );
    // Namespace deletion empties, then removes, the namespace.
    s.kubectl_ok(&["delete", "namespace", "gone", "--timeout=20s"]);
    assert!(!s.kubectl(&["get", "namespace", "gone"]).status.success());
    let left = s.kubectl_ok(&["get", "cm", "-n", "gone", "-o", "name"]);
    assert_eq!(left.trim(), "");
}

#[test]
fn defaults_generate_name_and_shared_storage_versions() {
    let s = Server::start();
    s.kubectl_ok(&["run", "p1", "--image=busybox", "--", "sleep", "100"]);
    let pod: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "pod", "p1", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let tagged = s.kubectl_stdin_ok(
        &["create", "-f", "-", "-o", "jsonpath={.metadata.name} {.spec.containers[0].imagePullPolicy} {.status.qosClass}"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: gen-\nspec:\n  containers:\n  - name: c\n    image: registry.local/app:1.2\n    resources:\n      limits: {cpu: 100m, memory: 64Mi}\n",
    );
    let parts: Vec<&str> = tagged.split(' ').collect();
    assert!(
        parts[0].starts_with("gen-") && parts[0].len() == 9,
        "{tagged}"
    );
    assert_eq!(&parts[1..], ["IfNotPresent", "Guaranteed"]);

    // One Event store, two API versions.
    s.kubectl_stdin_ok(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: ev1\ninvolvedObject:\n  kind: Pod\n  name: p1\n  namespace: default\nreason: Tested\nmessage: hello from core\ntype: Normal\n",
    );
    let ev: serde_json::Value = serde_json::from_str(&s.kubectl_ok(&[
        "get",
        "events.v1.events.k8s.io",
        "ev1",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["note"], "hello from core");
    assert_eq!(ev["regarding"]["name"], "p1");
    let events = s.kubectl_ok(&["get", "events"]);
    assert!(
        events.contains("Tested") && events.contains("pod/p1"),
        "{events}"
    );

    // One HPA store, autoscaling v2 and v1 views.
    s.kubectl_ok(&["create", "deployment", "d2", "--image=registry.local/d:1"]);
    s.kubectl_ok(&["autoscale", "deploy", "d2", "--max=5", "--cpu-percent=50"]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "d2",
            "-o",
            "jsonpath={.spec.targetCPUUtilizationPercentage}"
        ]),
        "50"
    );
    let hpa = s.kubectl_ok(&["get", "hpa", "d2"]);
    assert!(hpa.contains("cpu: <unknown>/50%"), "{hpa}");
}

#[test]
fn service_account_tokens_authenticate_until_revoked() {
    let s = Server::start();
    // The service-account controller creates `default`; wait for it.
    let mut ok = false;
    for _ in 0..100 {
        if s.kubectl(&["get", "sa", "default"]).status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok, "no default service account");
    let token = s.kubectl_ok(&["create", "token", "default"]);
    let token = token.trim();
    assert_eq!(token.matches('.').count(), 2, "not a JWT: {token}");
    let who = s.kubectl_ok(&["--token", token, "auth", "whoami"]);
    assert!(
        who.contains("system:serviceaccount:default:default"),
        "{who}"
    );
    assert!(who.contains("system:serviceaccounts:default"), "{who}");
    // Authenticated, but not authorized beyond self-review without RBAC grants.
    let denied = s.kubectl(&["--token", token, "get", "pods"]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\""), "{err}");
    // A tampered token is refused.
    let mut forged = token.to_string();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let out = s.kubectl(&["--token", &forged, "auth", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));
    // Too short a lifetime is invalid, as upstream.
    let short = s.kubectl(&["create", "token", "default", "--duration=5m"]);
    assert!(
        String::from_utf8_lossy(&short.stderr)
            .contains("may not specify a duration less than 10 minutes")
    );
    // Deleting the account revokes its tokens.
    s.kubectl_ok(&["delete", "sa", "default"]);
    let out = s.kubectl(&["--token", token, "auth", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));
}

#[test]
fn resource_quota_and_limit_range_admission() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "q"]);
    s.kubectl_ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "q",
        "--hard=pods=2,requests.cpu=1,limits.memory=1Gi",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-n", "q", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: lr}\nspec:\n  limits:\n  - type: Container\n    default: {memory: 256Mi}\n    defaultRequest: {cpu: 300m}\n    max: {memory: 512Mi}\n",
    );
    // Defaults come from the LimitRange, and say so.
    s.kubectl_ok(&["run", "a", "-n", "q", "--image=registry.local/a:1"]);
    let res = s.kubectl_ok(&["get", "pod", "a", "-n", "q", "-o", "jsonpath={.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.limits.memory}"]);
    assert_eq!(res, "300m 256Mi");
    let ann = s.kubectl_ok(&[
        "get",
        "pod",
        "a",
        "-n",
        "q",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert_eq!(
        ann,
        "LimitRanger plugin set: cpu request for container a; memory limit for container a"
    );
    // Over the LimitRange's max.
    let over = s.kubectl(&["run", "big", "-n", "q", "--image=x", "--overrides", r#"{"spec":{"containers":[{"name":"big","image":"x","resources":{"limits":{"memory":"1Gi"}}}]}}"#]);
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(err.contains("pods \"big\" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi"), "{err}");
    // Quota: a second pod fits, a third exceeds the pod count.
    s.kubectl_ok(&["run", "b", "-n", "q", "--image=registry.local/b:1"]);
    let third = s.kubectl(&["run", "c", "-n", "q", "--image=registry.local/c:1"]);
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(err.contains("pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    // The quota's status shows usage (kept up to date by the server).
    let mut used = String::new();
    for _ in 0..100 {
        used = s.kubectl_ok(&["get", "quota", "q", "-n", "q", "-o", "jsonpath={.status.used.pods} {.status.used.requests\\.cpu} {.status.used.limits\\.memory}"]);
        if used == "2 600m 512Mi" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(used, "2 600m 512Mi");
}
