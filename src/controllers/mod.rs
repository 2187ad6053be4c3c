//! kube-controller-manager's work inside skiff: level-triggered
//! reconcilers (kube-runtime `Controller`s) that read through watches and
//! write only through the API, run under a leader-election Lease.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod job;
pub mod leader;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod serviceaccount;
pub mod statefulset;

use kube::Client;

/// Starts every controller; returns when the process shuts down.
pub async fn run(client: Client, identity: String) {
    leader::run_while_leader(
        client.clone(),
        "skiff-controller-manager",
        identity,
        |client| async move {
            // Each controller runs until shutdown; one module per controller.
            tokio::join!(
                deployment::run(client.clone()),
                replicaset::run(client.clone()),
                job::run(client.clone()),
                cronjob::run(client.clone()),
                daemonset::run(client.clone()),
                statefulset::run(client.clone()),
                endpoints::run(client.clone()),
                serviceaccount::run(client.clone()),
                nodelifecycle::run(client.clone()),
                disruption::run(client.clone()),
                podgc::run(client.clone()),
            );
        },
    )
    .await;
}
