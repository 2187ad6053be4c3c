//! Lease-based leader election (coordination.k8s.io/v1 Lease in
//! kube-system), as kube-controller-manager does it: acquire when free or
//! expired, renew every 2 s, step down when renewal fails for a lease
//! duration. kube-runtime 5 has no leader election, hence this module.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};

const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Runs `work` while this process holds the lease `name`; if leadership is
/// lost, `work` is dropped (cancelled) and election starts again.
pub async fn run_while_leader<F, Fut>(client: Client, name: &str, identity: String, work: F)
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    loop {
        if !try_acquire(&leases, name, &identity).await {
            tokio::time::sleep(RENEW_EVERY).await;
            continue;
        }
        tracing::info!(lease = name, %identity, "became leader");
        let renew = async {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let mut ok = false;
                let deadline =
                    tokio::time::Instant::now() + Duration::from_secs(LEASE_SECONDS as u64);
                while tokio::time::Instant::now() < deadline {
                    if try_acquire(&leases, name, &identity).await {
                        ok = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !ok {
                    return;
                }
            }
        };
        tokio::select! {
            _ = work(client.clone()) => return,
            _ = renew => tracing::warn!(lease = name, "lost leadership"),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Takes or renews the lease; false when someone else holds a live one.
async fn try_acquire(leases: &Api<Lease>, name: &str, identity: &str) -> bool {
    match leases.get_opt(name).await {
        Ok(None) => {
            let lease: Lease = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS,
                    "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0},
            }))
            .expect("lease object");
            leases.create(&PostParams::default(), &lease).await.is_ok()
        }
        Ok(Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                age.as_secs() > spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS) as i64
            });
            if holder != identity && !holder.is_empty() && !expired {
                return false;
            }
            if holder != identity {
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(identity.to_string());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            spec.renew_time = Some(now());
            leases
                .replace(name, &PostParams::default(), &lease)
                .await
                .is_ok()
        }
        Err(e) => {
            tracing::debug!("lease {name}: {e}");
            false
        }
    }
}
