//! Job and CronJob controllers, end to end against a real server with
//! simulated nodes (pods finish through the `sim.skiff.io/*` annotations).
//!
//! CronJob tests rely on `SKIFF_CRONJOB_TEST_MINUTE_SECONDS`, which makes
//! the server's CronJob clock pass one schedule minute every N real seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// One CronJob schedule minute passes every this many real seconds.
const MINUTE_SECONDS: &str = "2";

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls `setup` before doing anything else, so no
        // other test thread is running code (let alone reading the
        // environment) while this runs; servers inherit it when spawned.
        unsafe { std::env::set_var("SKIFF_CRONJOB_TEST_MINUTE_SECONDS", MINUTE_SECONDS) };
    });
}

fn start() -> (Server, Binder) {
    setup();
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    let b = Binder::start(&s);
    (s, b)
}

/// Binds pods that stay unbound for a while to a simulated node, in case
/// no scheduler runs; does nothing to pods a scheduler has bound.
struct Binder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Binder {
    fn start(s: &Server) -> Binder {
        let stop = Arc::new(AtomicBool::new(false));
        let kubeconfig = s.kubeconfig.clone();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(bind_loop(kubeconfig, flag));
        });
        Binder {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Binder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

async fn bind_loop(kubeconfig: std::path::PathBuf, stop: Arc<AtomicBool>) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, PostParams};
    let Ok(kc) = kube::config::Kubeconfig::read_from(&kubeconfig) else {
        return;
    };
    let Ok(cfg) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await else {
        return;
    };
    let Ok(client) = kube::Client::try_from(cfg) else {
        return;
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list {
                let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                let pending = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
                if bound || !pending || p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let seen = *first_seen.entry(uid).or_insert_with(Instant::now);
                if seen.elapsed() < Duration::from_secs(2) {
                    continue;
                }
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let body = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name}, "target": {"kind": "Node", "name": "sim-node-0"}});
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let _ = api
                    .create_subresource::<Value, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &body,
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("kubectl -o json output")
}

/// Polls `f` until it returns Some, failing after `secs` seconds.
fn wait_for<T>(s: &Server, secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    s.wait_for(what, secs, f)
}

fn apply(s: &Server, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

fn pods_of_job(s: &Server, job: &str) -> Vec<Value> {
    let v = json(
        s,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
        ],
    );
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

fn job_events(s: &Server, kind: &str, name: &str) -> Vec<(String, String)> {
    let v = json(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind={kind},involvedObject.name={name}"),
        ],
    );
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn job_with_completions_and_parallelism_runs_to_complete() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {sim.skiff.io/complete-after: "1"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    // Never more than `parallelism` pods at once.
    let mut max_active = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = json(&s, &["get", "job", "work"]);
        max_active = max_active.max(job["status"]["active"].as_i64().unwrap_or(0));
        let running = pods_of_job(&s, "work")
            .iter()
            .filter(|p| p["status"]["phase"] != "Succeeded" && p["status"]["phase"] != "Failed")
            .count();
        assert!(
            running <= 2,
            "more than parallelism pods running: {running}"
        );
        if condition(&job, "Complete").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not complete\n{}",
            s.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(max_active <= 2);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=5s",
    ]);
    let job = json(&s, &["get", "job", "work"]);
    assert_eq!(job["status"]["succeeded"], 3);
    assert!(job["status"]["completionTime"].is_string());
    assert!(job["status"]["startTime"].is_string());
    assert_eq!(
        job["status"]["uncountedTerminatedPods"],
        serde_json::json!({})
    );
    let met = condition(&job, "SuccessCriteriaMet").expect("SuccessCriteriaMet condition");
    assert_eq!(met["reason"], "CompletionsReached");
    assert_eq!(
        condition(&job, "Complete").unwrap()["message"],
        "Reached expected number of succeeded pods"
    );
    // The generated selector, and the labels on the pods it selects.
    let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );
    assert_eq!(job["spec"]["manualSelector"], false);
    let pods = pods_of_job(&s, "work");
    assert_eq!(pods.len(), 3, "exactly one pod per completion");
    for p in &pods {
        let l = &p["metadata"]["labels"];
        assert_eq!(l["batch.kubernetes.io/controller-uid"], uid.as_str());
        assert_eq!(l["controller-uid"], uid.as_str());
        assert_eq!(l["job-name"], "work");
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        // Counted pods lose the tracking finalizer.
        let fins: Vec<Value> = p["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !fins.contains(&Value::from("batch.kubernetes.io/job-tracking")),
            "{fins:?}"
        );
    }
    let events = job_events(&s, "Job", "work");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: work-")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Completed" && m == "Job completed"),
        "{events:?}"
    );
}

#[test]
fn failing_job_stops_at_backoff_limit() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: flaky}
spec:
  backoffLimit: 2
  template:
    metadata:
      annotations: {sim.skiff.io/complete-after: "0.2", sim.skiff.io/exit-code: "1"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    // Failures are retried with 10 s, then 20 s of backoff.
    s.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=90s",
    ]);
    let job = json(&s, &["get", "job", "flaky"]);
    let failed = condition(&job, "Failed").expect("Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert!(condition(&job, "FailureTarget").is_some());
    assert_eq!(job["status"]["failed"], 3);
    // No new pod after the limit was reached.
    std::thread::sleep(Duration::from_secs(2));
    let pods = pods_of_job(&s, "flaky");
    assert_eq!(pods.len(), 3, "{pods:#?}");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    let events = job_events(&s, "Job", "flaky");
    assert!(
        events.iter().any(|(r, m)| r == "BackoffLimitExceeded"
            && m == "Job has reached the specified backoff limit"),
        "{events:?}"
    );
}

#[test]
fn indexed_job_gives_each_pod_its_index() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: idx}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    metadata:
      annotations: {sim.skiff.io/complete-after: "0.5"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    s.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=60s",
    ]);
    let job = json(&s, &["get", "job", "idx"]);
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    let pods = pods_of_job(&s, "idx");
    let mut indexes = BTreeSet::new();
    for p in &pods {
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("completion index annotation")
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{ix}"));
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("idx-{ix}-"))
        );
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        indexes.insert(ix);
    }
    assert_eq!(
        indexes,
        ["0", "1", "2"].iter().map(|s| s.to_string()).collect()
    );
}

#[test]
fn active_deadline_fails_the_job_and_stops_its_pods() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    wait_for(&s, 20, "a running pod", || {
        pods_of_job(&s, "slow")
            .iter()
            .any(|p| p["status"]["phase"] == "Running")
            .then_some(())
    });
    s.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=30s",
    ]);
    let job = json(&s, &["get", "job", "slow"]);
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed["reason"], "DeadlineExceeded");
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(job["status"]["failed"], 1);
    assert!(job["status"]["active"].is_null());
    wait_for(&s, 20, "the pod to be gone", || {
        pods_of_job(&s, "slow").is_empty().then_some(())
    });
}

#[test]
fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: shortlived}
spec:
  ttlSecondsAfterFinished: 2
  template:
    metadata:
      annotations: {sim.skiff.io/complete-after: "0.3"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    s.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/shortlived",
        "--timeout=30s",
    ]);
    wait_for(&s, 30, "the job to be deleted", || {
        let out = s.kubectl(&["get", "job", "shortlived"]);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
            .then_some(())
    });
    wait_for(&s, 30, "its pods to be deleted", || {
        pods_of_job(&s, "shortlived").is_empty().then_some(())
    });
}

#[test]
fn pod_failure_policy_fail_job_on_exit_code() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: policy}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions: [{type: DisruptionTarget}]
    - action: FailJob
      onExitCodes: {containerName: main, operator: In, values: [42]}
  template:
    metadata:
      annotations: {sim.skiff.io/complete-after: "0.3", sim.skiff.io/exit-code: "42"}
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
"#,
    );
    // Without the rule this would retry six times with backoff.
    s.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/policy",
        "--timeout=20s",
    ]);
    let job = json(&s, &["get", "job", "policy"]);
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy");
    let msg = failed["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Container main for pod default/policy-")
            && msg.ends_with("failed with exit code 42 matching FailJob rule at index 1"),
        "{msg}"
    );
    assert_eq!(condition(&job, "FailureTarget").unwrap()["message"], msg);
    assert_eq!(job["status"]["failed"], 1);
    assert_eq!(pods_of_job(&s, "policy").len(), 1);
}

fn cronjob_jobs(s: &Server, cronjob: &str) -> BTreeMap<String, Value> {
    let v = json(s, &["get", "jobs"]);
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cronjob)
        .map(|j| (j["metadata"]["name"].as_str().unwrap().to_string(), j))
        .collect()
}

#[test]
fn cronjob_creates_jobs_on_schedule_and_trims_history() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 2
  jobTemplate:
    metadata:
      labels: {from: tick}
    spec:
      template:
        metadata:
          annotations: {sim.skiff.io/complete-after: "0.2"}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox}]
"#,
    );
    // Collect every Job name seen until at least four were created.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    wait_for(&s, 60, "four scheduled jobs", || {
        let jobs = cronjob_jobs(&s, "tick");
        for (name, j) in &jobs {
            if seen.insert(name.clone()) {
                let minutes: i64 = name
                    .strip_prefix("tick-")
                    .and_then(|m| m.parse().ok())
                    .expect("tick-<minutes>");
                let ts =
                    j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                        .as_str()
                        .expect("scheduled timestamp annotation");
                let t: k8s_openapi::jiff::Timestamp = ts.parse().unwrap();
                assert_eq!(t.as_second(), minutes * 60, "{name} {ts}");
                assert_eq!(j["metadata"]["labels"]["from"], "tick");
                assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
            }
        }
        (seen.len() >= 4).then_some(())
    });
    // History: at most two finished successful Jobs are kept.
    wait_for(&s, 30, "history trimmed to the limit", || {
        let complete = cronjob_jobs(&s, "tick")
            .values()
            .filter(|j| condition(j, "Complete").is_some())
            .count();
        (complete <= 2).then_some(())
    });
    let cj = json(&s, &["get", "cronjob", "tick"]);
    assert!(cj["status"]["lastScheduleTime"].is_string());
    assert!(cj["status"]["lastSuccessfulTime"].is_string());
    let events = job_events(&s, "CronJob", "tick");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created job tick-")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted job tick-")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(r, _)| r == "SawCompletedJob"),
        "{events:?}"
    );

    // Suspended: no new Jobs while several schedule minutes pass.
    s.kubectl_ok(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let before: BTreeSet<String> = cronjob_jobs(&s, "tick")
        .into_keys()
        .chain(seen.iter().cloned())
        .collect();
    let newest_before = before.iter().max().cloned();
    std::thread::sleep(Duration::from_secs(7));
    let after = cronjob_jobs(&s, "tick");
    assert!(
        after.keys().all(|n| Some(n) <= newest_before.as_ref()),
        "suspended CronJob created {:?} (newest before: {newest_before:?})",
        after.keys().collect::<Vec<_>>()
    );
}

#[test]
fn cronjob_forbid_skips_while_a_job_runs() {
    let (s, _b) = start();
    apply(
        &s,
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: single}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox}]
"#,
    );
    wait_for(&s, 30, "the first job", || {
        (!cronjob_jobs(&s, "single").is_empty()).then_some(())
    });
    // Four schedule minutes later there is still just the one running Job.
    std::thread::sleep(Duration::from_secs(8));
    let jobs = cronjob_jobs(&s, "single");
    assert_eq!(jobs.len(), 1, "{:?}", jobs.keys().collect::<Vec<_>>());
    let cj = json(&s, &["get", "cronjob", "single"]);
    assert_eq!(cj["status"]["active"].as_array().map(Vec::len), Some(1));
    let events = job_events(&s, "CronJob", "single");
    assert!(
        events.iter().any(|(r, m)| r == "JobAlreadyActive"
            && m == "Not starting job because prior execution is running and concurrency policy is Forbid"),
        "{events:?}"
    );
}
