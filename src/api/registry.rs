//! The catalogue of resources the API serves: built-ins from
//! `embedded/resources.json`, plus CRDs registered at run time.

use serde::{Deserialize, Serialize};

/// One REST resource (a plural name in a group-version).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// Plural, lower case: "deployments".
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    #[serde(default)]
    pub short_names: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Verbs as discovery lists them; empty means all eight
    /// (create delete deletecollection get list patch update watch).
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub subresources: Vec<SubresourceInfo>,
    /// Key of the schema in the OpenAPI definitions (`io.k8s.api.apps.v1.Deployment`);
    /// None for kinds without one.
    #[serde(default)]
    pub definition: Option<String>,
    /// Resources that share storage with another (events.k8s.io/v1 events and
    /// core/v1 events) name the storage owner here as "group/resource".
    #[serde(default)]
    pub storage: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubresourceInfo {
    /// "status", "scale", "log", "exec", ...
    pub name: String,
    /// Group/version/kind of the body the subresource takes and returns.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

impl ResourceInfo {
    pub fn gv(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn verbs(&self) -> Vec<String> {
        if self.verbs.is_empty() {
            [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        } else {
            self.verbs.clone()
        }
    }
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }
    pub fn subresource(&self, name: &str) -> Option<&SubresourceInfo> {
        self.subresources.iter().find(|s| s.name == name)
    }
    /// Whether objects are kept in the store (review kinds are not).
    pub fn is_stored(&self) -> bool {
        self.has_verb("get") || self.has_verb("list")
    }
    /// Storage prefix shared by every version of the resource:
    /// `/registry/<group or core>/<resource>/`.
    pub fn storage_prefix(&self) -> String {
        let (group, resource) = match &self.storage {
            Some(s) => {
                let (g, r) = s.split_once('/').unwrap_or(("", s.as_str()));
                (g.to_string(), r.to_string())
            }
            None => (self.group.clone(), self.resource.clone()),
        };
        let group = if group.is_empty() {
            "core".into()
        } else {
            group
        };
        format!("/registry/{group}/{resource}/")
    }
}

/// Per-version facts of a CRD that the generic handlers need.
#[derive(Clone, Debug, Default)]
pub struct CrdVersion {
    pub schema: Option<serde_json::Value>,
    pub printer_columns: Vec<serde_json::Value>,
    /// (specReplicasPath, statusReplicasPath, labelSelectorPath)
    pub scale: Option<(String, String, Option<String>)>,
}

/// Everything served, looked up by URL parts. Replaced whole (copy on
/// write) when a CRD changes, so readers never lock.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub resources: Vec<std::sync::Arc<ResourceInfo>>,
    pub crds: std::collections::HashMap<(String, String, String), CrdVersion>,
    /// Bumped on every change; part of the OpenAPI hash.
    pub generation: u64,
}

impl Registry {
    pub fn new(builtin: Vec<ResourceInfo>) -> Registry {
        Registry {
            resources: builtin.into_iter().map(std::sync::Arc::new).collect(),
            crds: Default::default(),
            generation: 1,
        }
    }

    pub fn find(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Option<std::sync::Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    pub fn crd(&self, r: &ResourceInfo) -> Option<&CrdVersion> {
        // Built-ins carry a schema definition; only CRD resources can match,
        // so the common case costs no key allocation (this runs per write).
        if r.definition.is_some() || self.crds.is_empty() {
            return None;
        }
        self.crds
            .get(&(r.group.clone(), r.version.clone(), r.resource.clone()))
    }

    /// Group-versions in discovery order: core first, then groups in
    /// catalogue order, versions in preference order.
    pub fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (_, vs) in out.iter_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    pub fn resources_of(&self, group: &str, version: &str) -> Vec<std::sync::Arc<ResourceInfo>> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .cloned()
            .collect()
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (class, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (class, major, minor)
}
