//! Reading and writing one KumikoApp and its children in a test cluster.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kumiko_crds::{KumikoApp, names};
use serde_json::Value;

use crate::cluster::FIELD_MANAGER;
use crate::manifests;
use crate::wait::eventually;

/// How long an app may take to become Ready (the first time: Postgres starts, migrations run).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One app under test: its name and namespace, and typed handles on what it owns.
#[derive(Clone)]
pub struct TestApp {
    /// The app's name.
    pub name: String,
    /// The app's namespace.
    pub namespace: String,
    client: Client,
}

impl TestApp {
    /// Server-side applies `manifest` (a KumikoApp as JSON) and returns a handle on it.
    pub async fn apply(client: &Client, manifest: &Value) -> Result<Self> {
        let name = manifest["metadata"]["name"]
            .as_str()
            .context("the manifest has no metadata.name")?
            .to_owned();
        let namespace = manifest["metadata"]["namespace"]
            .as_str()
            .context("the manifest has no metadata.namespace")?
            .to_owned();
        let app = TestApp {
            name,
            namespace,
            client: client.clone(),
        };
        app.reapply(manifest).await?;
        Ok(app)
    }

    /// Server-side applies `manifest` again (a changed spec).
    pub async fn reapply(&self, manifest: &Value) -> Result<()> {
        self.apps()
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(manifest),
            )
            .await
            .with_context(|| format!("applying KumikoApp {}/{}", self.namespace, self.name))?;
        Ok(())
    }

    /// Merge-patches the app's spec.
    pub async fn patch_spec(&self, spec: Value) -> Result<()> {
        self.apps()
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .with_context(|| format!("patching KumikoApp {}/{}", self.namespace, self.name))?;
        Ok(())
    }

    /// Deletes the app and waits until it is gone (its finalizer ran).
    pub async fn delete_and_wait(&self) -> Result<()> {
        self.apps()
            .delete(&self.name, &kube::api::DeleteParams::default())
            .await
            .with_context(|| format!("deleting KumikoApp {}/{}", self.namespace, self.name))?;
        eventually("the app to be gone", Duration::from_secs(60), || {
            let apps = self.apps();
            let name = self.name.clone();
            async move { Ok(apps.get_opt(&name).await?.is_none().then_some(())) }
        })
        .await
    }

    /// The KumikoApps of the namespace.
    pub fn apps(&self) -> Api<KumikoApp> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A namespaced API of the app's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The app as stored now.
    pub async fn get(&self) -> Result<KumikoApp> {
        self.apps()
            .get(&self.name)
            .await
            .with_context(|| format!("reading KumikoApp {}/{}", self.namespace, self.name))
    }

    /// Waits until `Ready=True` and returns the app then.
    pub async fn wait_ready(&self) -> Result<KumikoApp> {
        self.wait_for("Ready=True", READY_TIMEOUT, manifests::is_ready)
            .await
    }

    /// Waits until `predicate` holds for the app.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&KumikoApp) -> bool,
    ) -> Result<KumikoApp> {
        let apps = self.apps();
        let result = eventually(&format!("{} to be {what}", self.name), timeout, || {
            let apps = apps.clone();
            let predicate = &predicate;
            async move {
                let app = apps.get(&self.name).await?;
                Ok(predicate(&app).then_some(app))
            }
        })
        .await;
        match result {
            Ok(app) => Ok(app),
            Err(error) => {
                let status = self
                    .get()
                    .await
                    .ok()
                    .and_then(|app| app.status)
                    .map(|status| format!("{status:?}"))
                    .unwrap_or_default();
                bail!("{error:#}; status now: {status}")
            }
        }
    }

    /// The value of `key` in one of the app's Secrets.
    pub async fn secret_value(&self, secret: &str, key: &str) -> Result<String> {
        let secret_object = self
            .api::<Secret>()
            .get(secret)
            .await
            .with_context(|| format!("reading Secret {}/{secret}", self.namespace))?;
        let bytes = secret_object
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .with_context(|| format!("Secret {secret} has no {key}"))?;
        String::from_utf8(bytes.0.clone()).with_context(|| format!("{secret}.{key} is not UTF-8"))
    }

    /// The `uri` of the owner role's Secret.
    pub async fn owner_uri(&self) -> Result<String> {
        self.secret_value(&names::owner_secret(&self.name), "uri")
            .await
    }

    /// The `uri` of the runtime role's Secret.
    pub async fn runtime_uri(&self) -> Result<String> {
        self.secret_value(&names::runtime_secret(&self.name), "uri")
            .await
    }

    /// The app's pods of one component (`api`, `worker`, `migrate`).
    pub async fn pods(&self, component: &str) -> Result<Vec<Pod>> {
        let selector = format!(
            "{}={},{}={component}",
            names::INSTANCE_LABEL,
            self.name,
            names::COMPONENT_LABEL
        );
        Ok(self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing pods {selector}"))?
            .items)
    }

    /// The app's migrate Jobs, oldest first.
    pub async fn migrate_jobs(&self) -> Result<Vec<Job>> {
        let selector = format!("{}={}", names::INSTANCE_LABEL, self.name);
        let mut jobs: Vec<Job> = self
            .api::<Job>()
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing Jobs")?
            .items;
        jobs.sort_by_key(|job| job.metadata.creation_timestamp.clone());
        Ok(jobs)
    }

    /// The pods of a Job.
    pub async fn job_pods(&self, job: &str) -> Result<Vec<Pod>> {
        Ok(self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .context("listing Job pods")?
            .items)
    }

    /// A pod's log, read through the API.
    pub async fn pod_log(&self, pod: &str) -> Result<String> {
        self.api::<Pod>()
            .logs(pod, &LogParams::default())
            .await
            .with_context(|| format!("reading the log of pod {pod}"))
    }

    /// The API Deployment.
    pub async fn api_deployment(&self) -> Result<Deployment> {
        let name = names::api(&self.name);
        self.api::<Deployment>()
            .get(&name)
            .await
            .with_context(|| format!("reading Deployment {name}"))
    }

    /// The worker Deployment.
    pub async fn worker_deployment(&self) -> Result<Deployment> {
        let name = names::worker(&self.name);
        self.api::<Deployment>()
            .get(&name)
            .await
            .with_context(|| format!("reading Deployment {name}"))
    }
}

/// Whether a Job has the condition `type_` = True.
pub fn job_has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
}

/// Whether a pod is Running with every container ready, and not terminating.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}
