//! KumikoApp manifests for the scenarios, and reading their status.

use kumiko_crds::KumikoApp;
use serde_json::{Value, json};

/// Short lifecycle timings, so rollouts and shutdowns in tests take seconds.
pub fn fast_lifecycle() -> Value {
    json!({
        "linger": "1s",
        "drainTimeout": "5s",
        "shutdownTimeout": "10s",
        "startupTimeout": "30s"
    })
}

/// An app like `examples/minimal.yaml` (a dedicated one-instance CNPG cluster, one worker), with
/// one API pod and fast lifecycle timings.
pub fn minimal_app(name: &str, namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "kumiko.so/v1alpha1",
        "kind": "KumikoApp",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": image,
            "api": {"replicas": 1},
            "worker": {"replicas": 1},
            "lifecycle": fast_lifecycle(),
            "database": {"cluster": {"storage": {"size": "1Gi"}}}
        }
    })
}

/// A condition of the app: `(status, reason, message)`.
pub fn condition(app: &KumikoApp, type_: &str) -> Option<(String, String, String)> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether the app's `Ready` condition is `True`.
pub fn is_ready(app: &KumikoApp) -> bool {
    condition(app, "Ready").is_some_and(|(status, _, _)| status == "True")
}
