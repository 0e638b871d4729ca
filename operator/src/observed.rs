//! What the cluster holds for one app, as far as building the desired objects needs it.
//!
//! The controller's plan derives it from the observation (`Plan::facts`); `render` reads it from a
//! YAML file or takes [`Observed::default_for_render`]. Building the children from it is pure.

use serde::{Deserialize, Serialize};

/// The facts about an app's surroundings that decide what its children look like.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observed {
    /// The database is reachable (a dedicated CNPG Cluster reports Ready, or the shared/external
    /// reference resolved).
    #[serde(default)]
    pub database_ready: bool,

    /// The app's Postgres roles and their Secrets exist.
    #[serde(default)]
    pub roles_ready: bool,

    /// The image whose migrate Job last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_image: Option<String>,

    /// The image the Deployments run now (before this reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_image: Option<String>,

    /// A checksum of the database credentials the pods use; a change rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_checksum: Option<String>,

    /// The owning KumikoApp's UID, for owner references (the API server assigns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_uid: Option<String>,

    /// Where the operators that reach a dedicated database run.
    #[serde(default)]
    pub operators: OperatorNamespaces,
}

/// The namespaces of the two operators that connect to a dedicated database's instances, which its
/// NetworkPolicy lets in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorNamespaces {
    /// The Kumiko operator's own namespace (its `POD_NAMESPACE`, which the chart sets from the
    /// pod's `metadata.namespace`): it connects on 5432 to make the app's roles.
    #[serde(default = "default_kumiko")]
    pub kumiko: String,
    /// CloudNativePG's operator namespace (`--cnpg-namespace`, chart value `cnpg.namespace`):
    /// it reaches every instance on 8000 (the instance manager's status port) and 5432
    /// (CloudNativePG documentation, "Networking": "ensure the operator can reach every cluster
    /// pod on ports 8000 and 5432").
    #[serde(default = "default_cnpg")]
    pub cnpg: String,
}

/// The namespace the chart's README installs the Kumiko operator in.
pub const DEFAULT_KUMIKO_NAMESPACE: &str = "kumiko-system";
/// The namespace CloudNativePG's manifests and Helm chart install its operator in.
pub const DEFAULT_CNPG_NAMESPACE: &str = "cnpg-system";

fn default_kumiko() -> String {
    DEFAULT_KUMIKO_NAMESPACE.to_owned()
}

fn default_cnpg() -> String {
    DEFAULT_CNPG_NAMESPACE.to_owned()
}

impl Default for OperatorNamespaces {
    fn default() -> Self {
        Self {
            kumiko: default_kumiko(),
            cnpg: default_cnpg(),
        }
    }
}

impl Observed {
    /// What `render` assumes when no observed state is given: the database is ready, the roles
    /// exist, and the app's image is not yet migrated (a first deploy).
    pub fn default_for_render() -> Self {
        Self {
            database_ready: true,
            roles_ready: true,
            ..Self::default()
        }
    }
}
