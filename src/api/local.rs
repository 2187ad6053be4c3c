//! The in-process transport: a `kube::Client` whose requests go straight
//! into the API server's router, without TCP or TLS. Controllers and the
//! embedded agent use it; remote agents use HTTPS. One code path, two
//! transports.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use super::Api;
use super::auth::User;
use super::http::Body;

#[derive(Clone)]
pub struct LocalService {
    api: Arc<Api>,
    user: User,
}

impl tower::Service<hyper::Request<kube::client::Body>> for LocalService {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<kube::client::Body>) -> Self::Future {
        let api = self.api.clone();
        let user = self.user.clone();
        Box::pin(async move { Ok(api.handle(req, user).await) })
    }
}

/// A client acting as `user` (e.g. a controller's service identity).
pub fn client(api: Arc<Api>, user: &str, groups: &[&str]) -> kube::Client {
    let user = User {
        name: user.to_string(),
        uid: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    kube::Client::new(LocalService { api, user }, "default")
}
