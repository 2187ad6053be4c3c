//! kube-scheduler inside skiff: binds pending pods to nodes through the
//! `pods/binding` subresource.

use kube::Client;

/// Runs the scheduler until the process shuts down.
pub async fn run(client: Client) {
    let _ = client;
    futures::future::pending::<()>().await;
}
