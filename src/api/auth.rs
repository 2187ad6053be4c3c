//! Authentication (who is calling) and authorization (may they).
//!
//! Authenticators: client certificates signed by the cluster CA (CN = user,
//! O = groups) and bearer tokens (the join token). Authorization is a
//! separate step so RBAC can replace `authorize` without touching callers.

use x509_parser::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

/// The user named by a verified client certificate (DER).
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

/// The user named by a bearer token, if the token is known.
pub fn user_from_token(token: &str, server_secret: &str) -> Option<User> {
    let secret = crate::pki::token_secret(token)?;
    if constant_time_eq(secret.as_bytes(), server_secret.as_bytes()) {
        return Some(User {
            name: "system:skiff:node-join".into(),
            uid: String::new(),
            groups: vec![
                "system:bootstrappers".into(),
                "system:nodes".into(),
                "system:authenticated".into(),
            ],
        });
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource URLs (`/healthz`, `/api`).
    pub path: String,
}

/// Today: cluster admins (system:masters) and joined nodes may do
/// everything; RBAC evaluation plugs in here.
pub fn authorize(user: &User, attrs: &Attributes) -> Result<(), String> {
    if user
        .groups
        .iter()
        .any(|g| g == "system:masters" || g == "system:nodes")
    {
        return Ok(());
    }
    // system:basic-user: every authenticated user may ask who they are and
    // what they may do.
    let self_review = attrs.verb == "create"
        && ((attrs.group == "authentication.k8s.io" && attrs.resource == "selfsubjectreviews")
            || (attrs.group == "authorization.k8s.io"
                && matches!(
                    attrs.resource.as_str(),
                    "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
                )));
    if self_review && user.groups.iter().any(|g| g == "system:authenticated") {
        return Ok(());
    }
    // Upstream's wording for a denied request.
    Err(if !attrs.path.is_empty() {
        format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name,
            attrs.verb.to_lowercase(),
            attrs.path
        )
    } else {
        let res = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let named = if attrs.name.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", attrs.name)
        };
        let scope = if attrs.namespace.is_empty() {
            " at the cluster scope".to_string()
        } else {
            format!(" in the namespace \"{}\"", attrs.namespace)
        };
        format!(
            "User \"{}\" cannot {} resource \"{}\"{} in API group \"{}\"{}",
            user.name, attrs.verb, res, named, attrs.group, scope
        )
    })
}

/// Paths anonymous callers may read (health and version), as upstream's
/// `system:public-info-viewer`.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/cacerts"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_forms() {
        assert!(user_from_token("K10abc::server:s3cret", "s3cret").is_some());
        assert!(user_from_token("s3cret", "s3cret").is_some());
        assert!(user_from_token("K10abc::server:wrong", "s3cret").is_none());
        assert!(user_from_token("", "s3cret").is_none());
    }

    #[test]
    fn authorization() {
        let admin = User {
            name: "system:admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        assert!(authorize(&admin, &Attributes::default()).is_ok());
        assert!(authorize(&User::anonymous(), &Attributes::default()).is_err());
    }
}
