//! The operator's identity from its Helm chart: the ServiceAccount, ClusterRole, Role and their
//! bindings that `helm template charts/kumiko-operator` renders, applied to the test cluster, so
//! the operator the harness runs in-process acts as `system:serviceaccount:<ns>:kumiko-operator`
//! under exactly the chart's RBAC, as it does when installed by Helm.

use std::process::Command;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

use crate::binaries;
use crate::cluster::FIELD_MANAGER;

/// The kinds of the chart that make the operator's identity and permissions.
const IDENTITY_KINDS: [(&str, &str, &str, &str); 5] = [
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    ),
];

/// The `helm` to run: the one `make deps` unpacks, else the one on `PATH`.
pub fn helm() -> std::path::PathBuf {
    let local = binaries::workspace_root().join(".tools/bin/helm");
    if local.is_file() {
        local
    } else {
        "helm".into()
    }
}

/// The chart's ServiceAccount, roles and bindings for a release in `namespace`.
pub fn identity_manifests(namespace: &str) -> Result<Vec<Value>> {
    let chart = binaries::workspace_root().join("charts/kumiko-operator");
    let output = Command::new(helm())
        .args(["template", "kumiko-operator"])
        .arg(&chart)
        .args(["--namespace", namespace])
        .output()
        .context("running helm template (make deps installs helm)")?;
    if !output.status.success() {
        bail!(
            "helm template {}: {}",
            chart.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rendered = String::from_utf8(output.stdout).context("helm's output is not UTF-8")?;
    let mut objects = Vec::new();
    for document in rendered.split("\n---") {
        if document.trim().is_empty() {
            continue;
        }
        let object: Value =
            serde_saphyr::from_str(document).context("parsing a document of the chart")?;
        let kind = object["kind"].as_str().unwrap_or_default();
        if IDENTITY_KINDS.iter().any(|(_, _, known, _)| *known == kind) {
            objects.push(object);
        }
    }
    Ok(objects)
}

/// Removes the ClusterRole rule that grants `resource` (to see the operator fail without it).
pub fn without_rule(objects: &mut [Value], resource: &str) {
    for object in objects
        .iter_mut()
        .filter(|object| object["kind"] == "ClusterRole")
    {
        if let Some(rules) = object["rules"].as_array_mut() {
            rules.retain(|rule| {
                !rule["resources"]
                    .as_array()
                    .is_some_and(|resources| resources.iter().any(|r| r == resource))
            });
        }
    }
}

/// Server-side applies `objects` (of [`IDENTITY_KINDS`]) as the harness.
pub async fn apply(client: &Client, namespace: &str, objects: &[Value]) -> Result<()> {
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let Some((group, version, _, plural)) = IDENTITY_KINDS
            .iter()
            .find(|(_, _, known, _)| *known == kind)
        else {
            continue;
        };
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = if matches!(kind, "ClusterRole" | "ClusterRoleBinding") {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(client.clone(), namespace, &resource)
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .with_context(|| format!("applying the chart's {kind} {name}"))?;
    }
    Ok(())
}
