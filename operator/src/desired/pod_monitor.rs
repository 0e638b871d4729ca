//! The app's prometheus-operator PodMonitor (`spec.monitoring`): Prometheus scrapes
//! `/metrics` on the `http` container port of every API and worker pod.
//!
//! A PodMonitor, not a ServiceMonitor: the runtime serves `/metrics` on the process's one HTTP
//! port in both serving process types (`kumiko-runtime`'s boot router), and only the API has a
//! Service; a ServiceMonitor discovers its targets through a Service's endpoints and would miss
//! the worker. The selector is the pods' own labels (name and instance) with the component in
//! `api` or `worker`: the migrate Job's pods serve no HTTP and are left out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kumiko_contract::METRICS_PATH;
use kumiko_crds::{MonitoringSpec, names};

use super::Context;
use super::pod::{HTTP_PORT_NAME, Process};
use crate::prometheus_operator::{PodMetricsEndpoint, PodMonitor, PodMonitorSpec};

/// The container port Prometheus scrapes: the serving processes' one HTTP port.
pub const PORT: &str = HTTP_PORT_NAME;

/// The component label of the PodMonitor itself.
pub const COMPONENT: &str = "monitoring";

/// The PodMonitor of the app of `context`, named after the app: the spec's extra labels, then the
/// operator's (which win), and a selector of the API and worker pods.
pub(super) fn pod_monitor(context: &Context<'_>, monitoring: &MonitoringSpec) -> PodMonitor {
    let names = context.names();
    let mut metadata = context.metadata(names.app.clone(), COMPONENT);
    let mut labels: BTreeMap<String, String> = monitoring.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let pods = context.selector_labels(Process::Api.name());
    let match_labels = pods
        .into_iter()
        .filter(|(key, _)| key != names::COMPONENT_LABEL)
        .collect();
    let mut pod_monitor = PodMonitor::new(
        &names.app,
        PodMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: names::COMPONENT_LABEL.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![
                        Process::Api.name().to_owned(),
                        Process::Worker.name().to_owned(),
                    ]),
                }]),
            },
            pod_metrics_endpoints: vec![PodMetricsEndpoint {
                port: PORT.to_owned(),
                path: METRICS_PATH.to_owned(),
                interval: monitoring.interval.clone(),
            }],
        },
    );
    pod_monitor.metadata = metadata;
    pod_monitor
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use kumiko_crds::KumikoApp;

    use crate::desired::{Children, children};
    use crate::observed::Observed;
    use crate::prometheus_operator::PodMonitor;
    use crate::validate::ValidatedApp;

    fn app(monitoring: &str) -> KumikoApp {
        serde_saphyr::from_str(&format!(
            r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {{name: status, namespace: status}}
spec:
  image: app:1
  worker: {{replicas: 1}}
  database: {{cluster: {{storage: {{size: 1Gi}}}}}}
{monitoring}
"#
        ))
        .expect("test manifest parses")
    }

    fn rolled_out(app: &KumikoApp) -> Children {
        let observed = Observed {
            database_ready: true,
            roles_ready: true,
            migrated_image: Some("app:1".to_owned()),
            running_image: Some("app:1".to_owned()),
            ..Observed::default()
        };
        children(&ValidatedApp::new(app).expect("valid"), &observed)
    }

    /// Whether `selector` (matchLabels and `In` expressions, all the builder uses) selects a
    /// pod labelled `labels`.
    fn selects(monitor: &PodMonitor, labels: &BTreeMap<String, String>) -> bool {
        let selector = &monitor.spec.selector;
        let labels_match = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(key, value)| labels.get(key) == Some(value));
        let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
            assert_eq!(e.operator, "In", "the test reads In only");
            labels
                .get(&e.key)
                .is_some_and(|value| e.values.iter().flatten().any(|v| v == value))
        });
        labels_match && expressions_match
    }

    fn template_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
        template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_pod_monitor_selects_the_api_and_worker_pods_and_not_the_migrate_pods() {
        let app = app("  monitoring: {}");
        let children = rolled_out(&app);
        let monitor = children.pod_monitor.as_ref().expect("monitoring is on");
        for process in [&children.api, &children.worker] {
            let deployment = &process.as_ref().expect("rolled out").deployment;
            let template = &deployment.spec.as_ref().expect("spec").template;
            assert!(
                selects(monitor, &template_labels(template)),
                "{:?} is not selected",
                deployment.metadata.name
            );
        }
        let first_deploy = children_first_deploy(&app);
        let job = first_deploy
            .migrate_job
            .as_ref()
            .expect("a first deploy migrates");
        let template = &job.spec.as_ref().expect("spec").template;
        assert!(!selects(monitor, &template_labels(template)));
    }

    fn children_first_deploy(app: &KumikoApp) -> Children {
        children(
            &ValidatedApp::new(app).expect("valid"),
            &Observed::default_for_render(),
        )
    }

    #[test]
    fn the_endpoint_names_the_container_port_both_serving_processes_declare() {
        let app = app("  monitoring: {interval: 30s}");
        let children = rolled_out(&app);
        let monitor = children.pod_monitor.as_ref().expect("monitoring is on");
        let endpoint = &monitor.spec.pod_metrics_endpoints[0];
        assert_eq!(endpoint.path, kumiko_contract::METRICS_PATH);
        assert_eq!(endpoint.interval.as_deref(), Some("30s"));
        for process in [&children.api, &children.worker] {
            let deployment = &process.as_ref().expect("rolled out").deployment;
            let pod = deployment
                .spec
                .as_ref()
                .and_then(|spec| spec.template.spec.as_ref())
                .expect("pod spec");
            let ports: Vec<&str> = pod.containers[0]
                .ports
                .iter()
                .flatten()
                .filter_map(|port| port.name.as_deref())
                .collect();
            assert_eq!(ports, vec![endpoint.port.as_str()]);
        }
    }

    #[test]
    fn the_extra_labels_are_added_and_the_operators_own_labels_win() {
        let app = app(
            "  monitoring: {labels: {release: kube-prometheus-stack, app.kubernetes.io/managed-by: me}}",
        );
        let children = rolled_out(&app);
        let monitor = children.pod_monitor.as_ref().expect("monitoring is on");
        let labels = monitor.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["release"], "kube-prometheus-stack");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "kumiko-operator");
        assert_eq!(monitor.metadata.name.as_deref(), Some("status"));
        assert_eq!(
            monitor.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn no_pod_monitor_when_monitoring_is_unset_disabled_or_before_the_pods_exist() {
        assert_eq!(rolled_out(&app("")).pod_monitor, None);
        assert_eq!(
            rolled_out(&app("  monitoring: {enabled: false}")).pod_monitor,
            None
        );
        assert_eq!(
            children_first_deploy(&app("  monitoring: {}")).pod_monitor,
            None
        );
    }
}
