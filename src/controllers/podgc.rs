//! (to be written)

use kube::Client;

pub async fn run(client: Client) {
    let _ = client;
    futures::future::pending::<()>().await;
}
