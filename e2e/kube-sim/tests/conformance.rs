//! Conformance of kube-sim to the Kubernetes API, one test per documented rule, driven by a kube-rs
//! client against an in-process server. Each test's doc comment names the rule it follows
//! (Kubernetes documentation: "API Concepts", "Server-Side Apply", "Garbage Collection",
//! "Finalizers", "Custom Resources", "Validation Rules").

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use kube_sim::{ClusterConfig, Config, Server, ServerHandle};
use serde_json::{Value, json};

async fn start_with(cluster: ClusterConfig) -> (ServerHandle, Client) {
    let server = Server::start(Config {
        cluster,
        ..Default::default()
    })
    .await
    .expect("kube-sim starts");
    let client = server.client().expect("client");
    (server, client)
}

/// Sends one request through `client` (HTTPS, the admin token); returns the status code, the
/// `Warning` header and the body as JSON (`null` when empty).
async fn send_raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, Option<String>, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(body.into_bytes()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let warning = response
        .headers()
        .get("warning")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (code, warning, body)
}

async fn start() -> (ServerHandle, Client) {
    start_with(ClusterConfig::default()).await
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"}
    }))
    .expect("configmap")
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A CRD with a status subresource, defaults, CEL rules (one a transition rule), a list-map and
/// printer columns.
fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [
                                {"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize", "fieldPath": ".size"},
                                {"rule": "!has(oldSelf.color) || self.color == oldSelf.color", "message": "color is immutable", "fieldPath": ".color"}
                            ],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0},
                                "maxSize": {"type": "integer", "default": 10},
                                "color": {"type": "string", "enum": ["red", "blue"]},
                                "ports": {
                                    "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}
                                },
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                            }
                        },
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    })
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

async fn with_widgets(client: &Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).expect("crd");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("crd created");
    Api::namespaced_with(client.clone(), "default", &widget_resource())
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}))
        .expect("widget")
}

async fn next_event<K>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5s")
        .expect("stream open")
        .expect("event decodes")
}

fn names(list: &[ConfigMap]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(ResourceExt::name_any).collect();
    v.sort();
    v
}

/// "Starting the sim is cheap": the contract is under one second to a served request.
#[tokio::test]
async fn sim_starts_in_under_a_second() {
    let begin = Instant::now();
    let (server, client) = start().await;
    let ns: Api<Namespace> = Api::all(client);
    ns.get("default").await.expect("default namespace");
    let took = begin.elapsed();
    println!("kube-sim started and served a request in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    server.shutdown().await;
}

/// API Concepts, "Efficient detection of changes": a watch from a resourceVersion delivers every
/// change after it, in order.
#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let a = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let rv = a.resource_version().unwrap();
    api.create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected DELETED a, got {other:?}"),
    }
    api.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("expected ADDED c, got {other:?}"),
    }
}

/// API Concepts, "Watches" with a label selector: an object that stops matching is delivered as
/// DELETED, one that starts matching as ADDED.
#[tokio::test]
async fn watch_with_a_selector_sees_objects_leave_and_enter() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &cm("a", &[("app", "web")]))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().labels("app=web"),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Deleted(o) if o.name_any() == "a"));
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Added(o) if o.name_any() == "a"));
}

/// Fault injection: latency applies to the matching verb, and a watch is cut after the given time.
#[tokio::test]
async fn injected_latency_and_watch_cuts_apply_per_verb() {
    use kube_sim::faults::FaultRule;
    let (server, client) = start().await;
    let faults = server.cluster().faults();
    faults.add(FaultRule {
        verb: Some("list".into()),
        resource: Some("configmaps".into()),
        latency_ms: 300,
        ..Default::default()
    });
    faults.add(FaultRule {
        verb: Some("watch".into()),
        cut_watch_after_ms: Some(200),
        ..Default::default()
    });
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let begin = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(begin.elapsed() >= Duration::from_millis(300));
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the watch was cut");
}

/// API Concepts, "410 Gone responses": a watch from a version older than the history kept gets an
/// error event with code 410 (reason Expired).
#[tokio::test]
async fn watch_from_a_compacted_version_is_410_gone() {
    let (_s, client) = start_with(ClusterConfig {
        event_history: 2,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let first = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    for n in ["b", "c", "d"] {
        api.create(&PostParams::default(), &cm(n, &[]))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &first.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(s) => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

/// API Concepts, "Watch bookmarks": with allowWatchBookmarks the server sends BOOKMARK events
/// carrying a resourceVersion.
#[tokio::test]
async fn watch_bookmarks_are_sent_when_asked_for() {
    let (_s, client) = start_with(ClusterConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => {
            let rv: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(rv >= created.resource_version().unwrap().parse::<u64>().unwrap());
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

/// API Concepts, "Streaming lists": sendInitialEvents sends the current state as ADDED, then a
/// bookmark annotated `k8s.io/initial-events-end`.
#[tokio::test]
async fn streaming_list_ends_with_the_initial_events_bookmark() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Added(o) if o.name_any() == "a"));
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}

/// kube-runtime's watcher (list then watch, and streaming lists) sees creations and deletions.
#[tokio::test]
async fn kube_runtime_watcher_follows_changes() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    for cfg in [
        kube::runtime::watcher::Config::default(),
        kube::runtime::watcher::Config::default().streaming_lists(),
    ] {
        let mut objects = kube::runtime::watcher(api.clone(), cfg).boxed();
        let mut seen = Vec::new();
        let creator = {
            let api = api.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = api.create(&PostParams::default(), &cm("after", &[])).await;
            })
        };
        while !seen.contains(&"after".to_string()) {
            let ev = tokio::time::timeout(Duration::from_secs(5), objects.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match ev {
                kube::runtime::watcher::Event::InitApply(o)
                | kube::runtime::watcher::Event::Apply(o) => seen.push(o.name_any()),
                _ => {}
            }
        }
        creator.await.unwrap();
        assert!(seen.contains(&"before".to_string()));
        api.delete("after", &DeleteParams::default()).await.unwrap();
    }
}

/// API Concepts, "Resource versions" and "Create": creating a name that exists is 409 AlreadyExists.
#[tokio::test]
async fn create_of_an_existing_name_is_409_already_exists() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let err = api_error(
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"a\" already exists");
}

/// API Concepts, "Generated values": generateName gets a random suffix; names do not collide.
#[tokio::test]
async fn generate_name_creates_distinct_names() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut obj = cm("", &[]);
    obj.metadata.name = None;
    obj.metadata.generate_name = Some("gen-".into());
    let a = api.create(&PostParams::default(), &obj).await.unwrap();
    let b = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(
        a.name_any().starts_with("gen-") && a.name_any().len() == 9,
        "{}",
        a.name_any()
    );
    assert_ne!(a.name_any(), b.name_any());
}

/// API Concepts, "Resource versions" (optimistic concurrency): an update with a stale
/// resourceVersion is 409 Conflict; the global resourceVersion only grows.
#[tokio::test]
async fn update_with_a_stale_resource_version_is_409_conflict() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.data = Some(BTreeMap::from([("k".into(), "2".into())]));
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(
        updated.resource_version().unwrap().parse::<u64>().unwrap()
            > created.resource_version().unwrap().parse::<u64>().unwrap()
    );
    let err = api_error(
        api.replace("a", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
}

/// API Concepts: an update that changes nothing is a no-op (same resourceVersion).
#[tokio::test]
async fn no_op_update_keeps_the_resource_version() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let same = api
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), created.resource_version());
}

/// Server-Side Apply, "Conflicts": applying a field another manager owns with a different value
/// is 409 with the manager and field; with force the ownership moves.
#[tokio::test]
async fn server_side_apply_conflict_names_the_manager_and_force_takes_ownership() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cfg = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": v}});
    api.patch("a", &PatchParams::apply("alice"), &Patch::Apply(cfg("1")))
        .await
        .unwrap();
    // Same value: shared ownership, no conflict.
    api.patch("a", &PatchParams::apply("carol"), &Patch::Apply(cfg("1")))
        .await
        .unwrap();
    let err = api_error(
        api.patch("a", &PatchParams::apply("bob"), &Patch::Apply(cfg("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.starts_with("Apply failed with 2 conflicts"),
        "{}",
        err.message
    );
    let causes = err.details.unwrap().causes;
    assert!(
        causes
            .iter()
            .all(|c| c.reason == "FieldManagerConflict" && c.field == ".data.k")
    );
    assert!(
        causes
            .iter()
            .any(|c| c.message == "conflict with \"alice\" using v1")
    );
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cfg("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| m.manager.clone().unwrap())
        .collect();
    assert_eq!(managers, vec!["bob".to_string()]);
}

/// Server-Side Apply, "Field management": a field the applier stops applying is removed, unless
/// another manager owns it too.
#[tokio::test]
async fn server_side_apply_removes_fields_a_manager_stops_applying() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cfg = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": data});
    api.patch(
        "a",
        &PatchParams::apply("alice"),
        &Patch::Apply(cfg(json!({"x": "1", "y": "2", "z": "3"}))),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::apply("bob"),
        &Patch::Apply(cfg(json!({"z": "3"}))),
    )
    .await
    .unwrap();
    let after = api
        .patch(
            "a",
            &PatchParams::apply("alice"),
            &Patch::Apply(cfg(json!({"x": "1"}))),
        )
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("1"));
    assert!(!data.contains_key("y"), "y was only alice's: removed");
    assert_eq!(
        data.get("z").map(String::as_str),
        Some("3"),
        "z is bob's too: kept"
    );
}

/// Server-Side Apply, "Field management": updates record an Update entry in managedFields and take
/// the fields they change from other managers.
#[tokio::test]
async fn managed_fields_record_updates_and_applies() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
    api.patch("a", &PatchParams::apply("alice"), &Patch::Apply(applied))
        .await
        .unwrap();
    let updated = api
        .patch(
            "a",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    let mf = updated.metadata.managed_fields.unwrap();
    let editor = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("editor"))
        .expect("editor entry");
    assert_eq!(editor.operation.as_deref(), Some("Update"));
    assert_eq!(
        editor.fields_v1.as_ref().unwrap().0,
        json!({"f:data": {"f:k": {}}})
    );
    assert!(
        mf.iter().all(|m| m.manager.as_deref() != Some("alice")),
        "alice lost her only field"
    );
}

/// Server-side apply creates the object when it does not exist, and list-map items merge by key.
#[tokio::test]
async fn server_side_apply_creates_and_merges_list_maps_by_key() {
    let (_s, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let deploy = |containers: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}
        })
    };
    api.patch(
        "web",
        &PatchParams::apply("a"),
        &Patch::Apply(deploy(
            json!([{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}]),
        )),
    )
    .await
    .unwrap();
    let after = api
        .patch(
            "web",
            &PatchParams::apply("b"),
            &Patch::Apply(deploy(json!([{"name": "sidecar", "image": "side:1"}]))),
        )
        .await
        .unwrap();
    let containers = after.spec.unwrap().template.spec.unwrap().containers;
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["app", "sidecar"]);
    assert_eq!(
        containers[0].ports.as_ref().unwrap().len(),
        1,
        "the defaulted protocol key matches the applied port"
    );
}

/// Server-side apply converts the applied configuration to a typed value first, and
/// structured-merge-diff refuses a list-map with a repeated key: kube-apiserver answers 500 with
/// `failed to create typed patch object (<ns>/<name>; <group>/<version>, Kind=<kind>):
/// <path>: duplicate entries for key [name="A"]` (objectGVKNN in apimachinery's managedfields;
/// a reported known behaviour, kubernetes/kubernetes#121575). Nothing is stored.
#[tokio::test]
async fn server_side_apply_refuses_repeated_list_map_keys() {
    let (_s, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let deploy = |env: Value, pull_secrets: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "imagePullSecrets": pull_secrets,
                "containers": [{"name": "app", "image": "app:1", "env": env}]
            }}}
        })
    };
    let err = api_error(
        api.patch(
            "web",
            &PatchParams::apply("a"),
            &Patch::Apply(deploy(
                json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
                json!([{"name": "ghcr"}]),
            )),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        r#"failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.template.spec.containers[name="app"].env: duplicate entries for key [name="A"]"#
    );
    let err = api_error(
        api.patch(
            "web",
            &PatchParams::apply("a"),
            &Patch::Apply(deploy(
                json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
                json!([{"name": "ghcr"}, {"name": "ghcr"}]),
            )),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        err.message.ends_with(
            ": errors:\n  .spec.template.spec.containers[name=\"app\"].env: duplicate entries for key [name=\"A\"]\n  .spec.template.spec.imagePullSecrets: duplicate entries for key [name=\"ghcr\"]"
        ),
        "{}",
        err.message
    );
    assert!(api.get_opt("web").await.unwrap().is_none());
    api.patch(
        "web",
        &PatchParams::apply("a"),
        &Patch::Apply(deploy(
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
            json!([{"name": "ghcr"}]),
        )),
    )
    .await
    .unwrap();
}

fn owned_cm(name: &str, owner: &ConfigMap, block: bool) -> ConfigMap {
    let mut c = cm(name, &[]);
    c.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.name_any(),
            uid: owner.uid().unwrap(),
            block_owner_deletion: Some(block),
            controller: Some(true),
        },
    ]);
    c
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Garbage Collection, "Background cascading deletion": the owner goes at once, its dependents
/// are deleted by the garbage collector afterwards.
#[tokio::test]
async fn background_deletion_garbage_collects_dependents() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &owned_cm("dep", &owner, false))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(api.get_opt("owner").await.unwrap().is_none());
    eventually("dependent collected", || async {
        api.get_opt("dep").await.unwrap().is_none()
    })
    .await;
}

/// Garbage Collection, "Foreground cascading deletion": the owner gets deletionTimestamp and the
/// foregroundDeletion finalizer, and goes only after dependents with blockOwnerDeletion are gone.
#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let mut dep = owned_cm("dep", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &dep).await.unwrap();
    let pending = api
        .delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let pending = pending.left().expect("the owner is still there");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    eventually("dependent marked for deletion", || async {
        api.get("dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        api.get_opt("owner").await.unwrap().is_some(),
        "blocked by the dependent"
    );
    api.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("owner deleted", || async {
        api.get_opt("owner").await.unwrap().is_none()
    })
    .await;
}

/// Garbage Collection, "Orphaned dependents": with propagationPolicy Orphan the dependents stay and
/// lose their owner reference.
#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_owner_reference() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &owned_cm("dep", &owner, true))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    eventually("owner deleted", || async {
        api.get_opt("owner").await.unwrap().is_none()
    })
    .await;
    let dep = api.get("dep").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
}

/// Garbage Collection: a dependent whose owner reference names no existing object (a uid that
/// never existed, or an owner in another namespace) is collected as soon as it is written.
#[tokio::test]
async fn dependent_of_an_absent_or_cross_namespace_owner_is_collected() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut ghost = cm("ghost", &[]);
    ghost.metadata.uid = Some("00000000-0000-0000-0000-00000000dead".into());
    api.create(&PostParams::default(), &owned_cm("orphan", &ghost, false))
        .await
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut other = k8s_openapi::api::core::v1::Namespace::default();
    other.metadata.name = Some("elsewhere".into());
    namespaces
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "elsewhere");
    let foreign_owner = elsewhere
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &owned_cm("cross", &foreign_owner, false),
    )
    .await
    .unwrap();
    eventually("both dependents collected", || async {
        api.get_opt("orphan").await.unwrap().is_none()
            && api.get_opt("cross").await.unwrap().is_none()
    })
    .await;
    assert!(elsewhere.get_opt("owner").await.unwrap().is_some());
}

/// Garbage Collection: only the references an object holds now count. A dependent that dropped
/// its owner reference outlives the owner; one with a second, live owner loses the reference to
/// the deleted one and stays.
#[tokio::test]
async fn only_current_owner_references_lead_to_collection() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let second = api
        .create(&PostParams::default(), &cm("second", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &owned_cm("released", &owner, false))
        .await
        .unwrap();
    api.patch(
        "released",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
    )
    .await
    .unwrap();
    let mut shared = owned_cm("shared", &owner, false);
    let mut second_ref = shared.metadata.owner_references.clone().unwrap()[0].clone();
    second_ref.name = second.name_any();
    second_ref.uid = second.uid().unwrap();
    second_ref.controller = None;
    shared
        .metadata
        .owner_references
        .as_mut()
        .unwrap()
        .push(second_ref);
    api.create(&PostParams::default(), &shared).await.unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the reference to the deleted owner removed", || async {
        api.get("shared")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .all(|r| r.name == "second")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.get_opt("released").await.unwrap().is_some());
    assert!(api.get_opt("shared").await.unwrap().is_some());
}

/// Metadata-only requests (`Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`)
/// answer `meta.k8s.io/v1` PartialObjectMetadata: the metadata, no spec or data, for get, list and
/// watch events.
#[tokio::test]
async fn metadata_only_requests_answer_partial_object_metadata() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("meta", &[("big", "value")]))
        .await
        .unwrap();

    let one = api.get_metadata("meta").await.unwrap();
    assert_eq!(one.types.unwrap().kind, "PartialObjectMetadata");
    assert_eq!(one.metadata.name.as_deref(), Some("meta"));

    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].types.as_ref().unwrap().api_version,
        "meta.k8s.io/v1"
    );

    let mut events = api
        .watch_metadata(
            &WatchParams::default(),
            &list.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    api.patch(
        "meta",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let kube::api::WatchEvent::Modified(changed) = event else {
        panic!("expected MODIFIED, got {event:?}");
    };
    assert_eq!(changed.types.unwrap().kind, "PartialObjectMetadata");
    assert_eq!(changed.metadata.labels.unwrap()["seen"], "yes");
}

/// Finalizers: deleting an object with finalizers sets deletionTimestamp; it goes when the last
/// finalizer is removed; no new finalizer may be added meanwhile.
#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut obj = cm("a", &[]);
    obj.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    let pending = api
        .delete("a", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let err = api_error(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/cleanup", "example.com/more"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(err.details.unwrap().causes[0].field, "metadata.finalizers");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

/// Custom Resources, "Status subresource": the main endpoint ignores status changes; `/status`
/// ignores everything but status.
#[tokio::test]
async fn status_subresource_splits_spec_and_status_writes() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    let mut w = widget("w", json!({"size": 1}));
    w.data["status"] = json!({"phase": "Ignored"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.data.get("status").is_none(), "create drops status");
    let after = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], "Ready");
    assert_eq!(after.data["spec"]["size"], 1, "/status ignores spec");
    let main = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.data["status"]["phase"], "Ready",
        "the main endpoint ignores status"
    );
    assert_eq!(main.data["spec"]["size"], 2);
}

/// Custom Resources, "Defaulting": structural defaults apply to a missing parent and then to its
/// properties (apiextensions-apiserver `pkg/apiserver/schema/defaulting/algorithm.go`), and also
/// when the object is read from etcd, so a `status` default shows on a custom resource whose
/// create dropped its status (status subresource). This is what lets kstatus (`helm --wait`) see
/// `observedGeneration: 0` on an object no controller has seen yet.
#[tokio::test]
async fn schema_defaults_fill_a_status_the_create_dropped() {
    let (_s, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"] = json!({
        "type": "object", "default": {},
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64", "default": 0},
            "phase": {"type": "string"}
        }
    });
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &widget_resource());
    let mut w = widget("w", json!({"size": 1}));
    w.data["status"] = json!({"phase": "Ignored", "observedGeneration": 7});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["status"], json!({"observedGeneration": 0}));
    assert_eq!(created.metadata.generation, Some(1));
    let read = api.get("w").await.unwrap();
    assert_eq!(read.data["status"], json!({"observedGeneration": 0}));
    assert_eq!(read.data["spec"]["maxSize"], 10, "nested spec defaults too");
    let written = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1, "phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        written.data["status"],
        json!({"observedGeneration": 1, "phase": "Ready"})
    );
}

/// Server-Side Apply on the status subresource: a controller owns status fields under a `status`
/// subresource entry; spec and generation are untouched.
#[tokio::test]
async fn server_side_apply_of_status_owns_status_only() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    api.create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let applied = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 9}, "status": {"phase": "Ready"}});
    let after = api
        .patch_status(
            "w",
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(applied),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], "Ready");
    assert_eq!(after.data["spec"]["size"], 1);
    assert_eq!(after.metadata.generation, Some(1));
    let entry = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("widget-controller"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(
        entry.fields_v1.unwrap().0,
        json!({"f:status": {"f:phase": {}}})
    );
}

/// API Concepts / Custom Resources: metadata.generation starts at 1 and is bumped on spec changes
/// only, not on status or metadata changes.
#[tokio::test]
async fn generation_is_bumped_on_spec_changes_only() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    let created = api
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let s = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    let l = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(1));
    let sp = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(sp.metadata.generation, Some(2));
}

/// Custom Resources, "Validation" and "Defaulting": OpenAPI violations are 422 Invalid with the
/// field path in details.causes; defaults are applied.
#[tokio::test]
async fn schema_violations_are_422_with_field_paths_and_defaults_apply() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    let err = api_error(
        api.create(
            &PostParams::default(),
            &widget("w", json!({"size": -1, "color": "green"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.unwrap().causes;
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, vec!["spec.color", "spec.size"]);
    assert_eq!(
        causes[1].message,
        "Invalid value: -1: spec.size in body should be greater than or equal to 0"
    );
    assert_eq!(causes[0].reason, "FieldValueNotSupported");
    let ok = api
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["maxSize"], 10, "default applied");
}

/// Validation Rules (CEL): a failing x-kubernetes-validations rule is 422 with the rule's message at
/// its fieldPath; transition rules see oldSelf on update.
#[tokio::test]
async fn cel_rules_reject_with_422_and_transition_rules_use_old_self() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    let err = api_error(
        api.create(&PostParams::default(), &widget("w", json!({"size": 11})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    let cause = &err.details.unwrap().causes[0];
    assert_eq!(cause.field, "spec.size");
    assert_eq!(
        cause.message,
        "Invalid value: \"integer\": size must not exceed maxSize"
    );
    api.create(
        &PostParams::default(),
        &widget("w", json!({"size": 1, "color": "red"})),
    )
    .await
    .unwrap();
    let err = api_error(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "blue"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.details.unwrap().causes[0].field, "spec.color");
}

/// API Concepts, "Field validation": unknown fields are 400 under Strict, pruned with a warning
/// under Warn (the default), silently under Ignore.
#[tokio::test]
async fn unknown_fields_follow_field_validation() {
    let (_server, client) = start().await;
    let api = with_widgets(&client).await;
    let _ = api;
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, "bogus": 1}}).to_string();
    let (code, _, status) = send_raw(
        &client,
        "POST",
        "/apis/example.com/v1/namespaces/default/widgets?fieldValidation=Strict",
        "application/json",
        widget.clone(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "strict decoding error: unknown field \"spec.bogus\""
    );
    // Warn: pruned, and the Warning header says so.
    let (code, warning, stored) = send_raw(
        &client,
        "POST",
        "/apis/example.com/v1/namespaces/default/widgets",
        "application/json",
        widget,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(
        warning.unwrap(),
        "299 - \"unknown field \\\"spec.bogus\\\"\""
    );
    assert!(stored["spec"].get("bogus").is_none());
}

/// API Concepts, "Label selectors": =, ==, !=, in, notin, exists and !exists.
#[tokio::test]
async fn label_selectors_filter_lists() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &cm("a", &[("app", "web"), ("tier", "front")]),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("b", &[("app", "worker")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    let q = |s: &'static str| {
        let api = api.clone();
        async move {
            names(
                &api.list(&ListParams::default().labels(s))
                    .await
                    .unwrap()
                    .items,
            )
        }
    };
    assert_eq!(q("app=web").await, vec!["a"]);
    assert_eq!(q("app==web").await, vec!["a"]);
    assert_eq!(q("app!=web").await, vec!["b", "c"]);
    assert_eq!(q("app in (web,worker)").await, vec!["a", "b"]);
    assert_eq!(q("app notin (web)").await, vec!["b", "c"]);
    assert_eq!(q("tier").await, vec!["a"]);
    assert_eq!(q("!tier").await, vec!["b", "c"]);
}

/// API Concepts, "Field selectors": metadata.name and metadata.namespace; other fields are 400.
#[tokio::test]
async fn field_selectors_on_name_and_namespace() {
    let (_s, client) = start().await;
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
    )
    .await
    .unwrap();
    let here: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let there: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    here.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    there
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    there
        .create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    let all: Api<ConfigMap> = Api::all(client);
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 2);
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace=other,metadata.name!=a"))
        .await
        .unwrap();
    assert_eq!(names(&by_ns.items), vec!["b"]);
    let err = api_error(
        all.list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
}

/// API Concepts, "Retrieving large results sets in chunks": limit and continue page through a
/// consistent snapshot.
#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for n in ["a", "b", "c"] {
        api.create(&PostParams::default(), &cm(n, &[]))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), vec!["a", "b"]);
    let token = first.metadata.continue_.clone().unwrap();
    api.create(&PostParams::default(), &cm("d", &[]))
        .await
        .unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        names(&second.items),
        vec!["c"],
        "the snapshot does not see d"
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
}

/// API Concepts, "Dry-run": dryRun=All validates and answers but stores nothing.
#[tokio::test]
async fn dry_run_stores_nothing() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let out = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("a", &[]),
        )
        .await
        .unwrap();
    assert_eq!(out.name_any(), "a");
    assert!(api.get_opt("a").await.unwrap().is_none());
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    api.patch("a", &pp, &Patch::Merge(json!({"data": {"k": "dry"}})))
        .await
        .unwrap();
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "v");
    api.delete(
        "a",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_some());
}

/// API Concepts, "Patch": JSON merge patch (null deletes), JSON patch (a failed test is 422).
#[tokio::test]
async fn merge_and_json_patches() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut obj = cm("a", &[]);
    obj.data = Some(BTreeMap::from([
        ("x".into(), "1".into()),
        ("y".into(), "2".into()),
    ]));
    api.create(&PostParams::default(), &obj).await.unwrap();
    let merged = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": null, "z": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("y".into(), "2".into()), ("z".into(), "3".into())])
    );
    let json_patch = |ops: Value| {
        send_raw(
            &client,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/a",
            "application/json-patch+json",
            ops.to_string(),
        )
    };
    let (ok, _, _) = json_patch(json!([{"op": "replace", "path": "/data/y", "value": "9"}])).await;
    assert_eq!(ok, 200);
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["y"], "9");
    let (failed, _, status) =
        json_patch(json!([{"op": "test", "path": "/data/y", "value": "0"}])).await;
    assert_eq!(failed, 422);
    assert_eq!(status["kind"], "Status");
}

/// API Concepts, "Patch" / strategic merge patch: lists of containers merge by name, env by name;
/// custom resources do not support it (415).
#[tokio::test]
async fn strategic_merge_patch_merges_by_key_and_is_refused_for_custom_resources() {
    let (_s, client) = start().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}
        ]}}}
    })).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]}}}})))
        .await
        .unwrap();
    let cs = patched.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("app:2"));
    let env: Vec<&str> = cs[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, vec!["A", "B"]);
    let widgets = with_widgets(&client).await;
    widgets
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let err = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 2}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);
}

/// API Concepts, "Responses": errors are metav1.Status with reason and code (NotFound here).
#[tokio::test]
async fn errors_are_status_objects() {
    let (_s, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let err = api_error(api.get("missing").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "deployments.apps \"missing\" not found");
    let details = err.details.unwrap();
    assert_eq!(details.name, "missing");
    assert_eq!(details.group, "apps");
}

/// Namespaces: objects cannot be created in a namespace that does not exist (404) or is
/// terminating (403); deleting a namespace deletes its contents, then the namespace.
#[tokio::test]
async fn namespace_lifecycle() {
    let (_s, client) = start().await;
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    assert_eq!(
        api_error(
            missing
                .create(&PostParams::default(), &cm("a", &[]))
                .await
                .unwrap_err()
        )
        .code,
        404
    );
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let inside: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    inside.create(&PostParams::default(), &held).await.unwrap();
    ns.delete("tmp", &DeleteParams::default()).await.unwrap();
    let terminating = ns.get("tmp").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        api_error(
            inside
                .create(&PostParams::default(), &cm("new", &[]))
                .await
                .unwrap_err()
        )
        .code,
        403
    );
    inside
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("namespace gone", || async {
        ns.get_opt("tmp").await.unwrap().is_none()
    })
    .await;
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}})).unwrap()
}

/// Pod validation, `ValidateResourceRequirements` (pkg/apis/core/validation/validation.go): a
/// container whose request exceeds its limit is 422 Invalid, for a Pod and for a Deployment's pod
/// template alike, at `<containers[i]>.resources.requests` with the canonical quantities; a
/// request equal to its limit, or a limit alone, is accepted.
#[tokio::test]
async fn a_request_above_its_limit_is_422_for_pods_and_pod_templates() {
    let (_s, client) = start().await;
    let container =
        |resources: Value| json!([{"name": "app", "image": "app:1", "resources": resources}]);
    let over = json!({"requests": {"cpu": "0.25", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "1Gi"}});

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod_with = |name: &str, resources: Value| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"containers": container(resources)}}),
        )
        .unwrap()
    };
    let err = api_error(
        pods.create(&PostParams::default(), &pod_with("over", over.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.unwrap().causes;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].field, "spec.containers[0].resources.requests");
    assert_eq!(
        causes[0].message,
        r#"Invalid value: "250m": must be less than or equal to cpu limit of 100m"#
    );
    for (name, resources) in [
        (
            "equal",
            json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "0.1"}}),
        ),
        (
            "limit-only",
            json!({"limits": {"cpu": "100m", "memory": "64Mi"}}),
        ),
    ] {
        pods.create(&PostParams::default(), &pod_with(name, resources))
            .await
            .unwrap();
    }

    let deployments: Api<Deployment> = Api::default_namespaced(client);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": container(over)}}
        }
    }))
    .unwrap();
    let err = api_error(
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        r#"Deployment.apps "web" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: "250m": must be less than or equal to cpu limit of 100m"#
    );
}

/// "Limit Ranges": LimitRanger gives a container with neither request nor limit the `defaultRequest`
/// and the `default` (limit); a container with a limit only has its request defaulted to the
/// limit (Pod defaulting, before admission); and since kube-apiserver validates after mutating
/// admission, a `default` limit below a container's own request makes the pod 422 Invalid
/// (`must be less than or equal to memory limit of 128Mi`), not stored.
#[tokio::test]
async fn limit_range_defaults_then_validation_refuses_a_default_limit_below_the_request() {
    use k8s_openapi::api::core::v1::LimitRange;
    let (server, client) = start().await;
    server.cluster().admission().register(std::sync::Arc::new(
        kube_sim::controllers::quota::PodAdmission {
            bind_to_node: false,
        },
    ));
    let ranges: Api<LimitRange> = Api::default_namespaced(client.clone());
    let range: LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "budget"},
        "spec": {"limits": [{"type": "Container",
            "default": {"memory": "128Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}
    }))
    .unwrap();
    ranges.create(&PostParams::default(), &range).await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pod_with = |name: &str, resources: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "resources": resources}
        ]}}))
        .unwrap()
    };
    let resources = |pod: &Pod| {
        let r = pod.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        let text = |m: Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.0))
                .collect::<Vec<_>>()
                .join(",")
        };
        (text(r.requests), text(r.limits))
    };

    let neither = pods
        .create(&PostParams::default(), &pod_with("neither", json!({})))
        .await
        .unwrap();
    assert_eq!(
        resources(&neither),
        ("cpu=100m,memory=128Mi".into(), "memory=128Mi".into())
    );
    let limit_only = pods
        .create(
            &PostParams::default(),
            &pod_with("limit-only", json!({"limits": {"memory": "64Mi"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        resources(&limit_only),
        ("cpu=100m,memory=64Mi".into(), "memory=64Mi".into())
    );

    let err = api_error(
        pods.create(
            &PostParams::default(),
            &pod_with("big", json!({"requests": {"memory": "256Mi"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        r#"Pod "big" is invalid: spec.containers[0].resources.requests: Invalid value: "256Mi": must be less than or equal to memory limit of 128Mi"#
    );
    assert!(pods.get_opt("big").await.unwrap().is_none());
}

/// Pod lifecycle, "Termination of Pods": a pod bound to a node is deleted gracefully (it stays
/// with deletionTimestamp until the kubelet deletes it with grace period 0); an unbound pod goes at once.
#[tokio::test]
async fn bound_pods_terminate_gracefully() {
    let (_s, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    let created = pods
        .create(&PostParams::default(), &pod("free"))
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    pods.delete("free", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("free").await.unwrap().is_none());
    let mut bound = pod("bound");
    bound.spec.as_mut().unwrap().node_name = Some("sim-node".into());
    pods.create(&PostParams::default(), &bound).await.unwrap();
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = pods.get("bound").await.unwrap();
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());
}

/// Pod logs are served from the log store the kubelet writes into.
#[tokio::test]
async fn pod_logs_come_from_the_log_store() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let err = api_error(pods.logs("p", &Default::default()).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("is waiting to start"),
        "{}",
        err.message
    );
    server
        .cluster()
        .pod_logs()
        .append("default", "p", "app", b"one\ntwo\nthree\n");
    assert_eq!(
        pods.logs("p", &Default::default()).await.unwrap(),
        "one\ntwo\nthree\n"
    );
    let tail = pods
        .logs(
            "p",
            &kube::api::LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "three\n");
}

/// Admission: a registered hook can reject a pod with 403 Forbidden and its message.
#[tokio::test]
async fn admission_hook_rejects_with_403() {
    use kube_sim::admission::{AdmissionContext, AdmissionRequest, Rejection};
    let (server, client) = start().await;
    server.cluster().admission().register(std::sync::Arc::new(
        |req: &AdmissionRequest<'_>, _obj: &mut Value, ctx: &mut AdmissionContext<'_>| {
            if req.resource == "pods" && !ctx.list("", "pods", Some(req.namespace)).is_empty() {
                return Err(Rejection {
                    message: "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
                        .into(),
                });
            }
            Ok(())
        },
    ));
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let err = api_error(
        pods.create(&PostParams::default(), &pod("b"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "pods \"b\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
    );
}

/// Admission: a hook can change the object and charge another object's status in the same step;
/// a dry run charges nothing.
#[tokio::test]
async fn admission_hook_mutates_and_updates_status_atomically() {
    use kube_sim::admission::{AdmissionContext, AdmissionRequest, Operation, Rejection};
    let (server, client) = start().await;
    server.cluster().admission().register(std::sync::Arc::new(
        |req: &AdmissionRequest<'_>,
         obj: &mut Value,
         ctx: &mut AdmissionContext<'_>|
         -> Result<(), Rejection> {
            if req.resource == "pods" && req.operation == Operation::Create {
                obj["metadata"]["annotations"] = json!({"admitted": "yes"});
                let used = ctx.list("", "pods", Some(req.namespace)).len() + 1;
                ctx.update_status(
                    "",
                    "configmaps",
                    req.namespace,
                    "usage",
                    json!({"pods": used}),
                );
            }
            Ok(())
        },
    ));
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("usage", &[]))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &pod("dry"),
    )
    .await
    .unwrap();
    let raw = |server: &ServerHandle| server.cluster().snapshot("", "configmaps", Some("default"));
    assert!(
        raw(&server)[0].get("status").is_none(),
        "a dry run charges nothing"
    );
    let created = pods
        .create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    assert_eq!(
        created.annotations().get("admitted").map(String::as_str),
        Some("yes")
    );
    assert_eq!(raw(&server)[0]["status"], json!({"pods": 1}));
}

/// Fault injection over HTTP: injected 409s and 500s per verb and resource, then cleared.
#[tokio::test]
async fn faults_are_injected_over_http() {
    let (_server, client) = start().await;
    let (code, _, _) = send_raw(
        &client,
        "POST",
        "/sim/faults",
        "application/json",
        json!({"verb": "create", "resource": "configmaps", "error": 409, "times": 1}).to_string(),
    )
    .await;
    assert_eq!(code, 201);
    send_raw(
        &client,
        "POST",
        "/sim/faults",
        "application/json",
        json!({"verb": "get", "resource": "configmaps", "error": 500}).to_string(),
    )
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    assert_eq!(
        api_error(
            api.create(&PostParams::default(), &cm("a", &[]))
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    assert_eq!(api_error(api.get("a").await.unwrap_err()).code, 500);
    send_raw(
        &client,
        "DELETE",
        "/sim/faults",
        "application/json",
        String::new(),
    )
    .await;
    api.get("a").await.unwrap();
}

/// Fault injection: cut watches end the stream (clients then re-watch).
#[tokio::test]
async fn cut_watches_end_the_stream() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    server.cluster().faults().cut_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the watch ended");
}

/// CustomResourceDefinitions: a created CRD becomes Established and is served (discovery too);
/// deleting it deletes its custom resources.
#[tokio::test]
async fn crds_are_established_served_and_clean_up() {
    let (_s, client) = start().await;
    let api = with_widgets(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.example.com").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    assert!(discovery.groups().any(|g| g.name() == "example.com"));
    api.create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    eventually("CRD gone", || async {
        crds.get_opt("widgets.example.com").await.unwrap().is_none()
    })
    .await;
    assert!(
        api.list(&ListParams::default()).await.is_err(),
        "no longer served"
    );
}

/// Events: core/v1 and events.k8s.io/v1 Events are the same objects through two versions.
#[tokio::test]
async fn events_are_shared_between_core_and_events_api() {
    let (_s, client) = start().await;
    let new_api: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "kumiko.so/operator", "reportingInstance": "op-1",
        "action": "Reconcile", "reason": "Ready", "type": "Normal", "note": "all good",
        "regarding": {"apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp", "name": "app", "namespace": "default"}
    })).unwrap();
    new_api.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=app"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].message.as_deref(), Some("all good"));
    assert_eq!(
        listed.items[0].reporting_component.as_deref(),
        Some("kumiko.so/operator")
    );
}

/// The shipped CNPG Cluster CRD is preloaded and checks `spec.instances`.
#[tokio::test]
async fn cnpg_cluster_crd_is_preloaded_and_validates() {
    let (_s, client) = start().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let obj = |instances: i64| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "db"}, "spec": {"instances": instances, "storage": {"size": "1Gi"}}})).unwrap()
    };
    let err = api_error(
        clusters
            .create(&PostParams::default(), &obj(0))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.details.unwrap().causes[0].field, "spec.instances");
    clusters
        .create(&PostParams::default(), &obj(1))
        .await
        .unwrap();
}

/// CloudNativePG's validating webhook (`vcluster.cnpg.io`, `validateResources` in
/// internal/webhook/v1/cluster_webhook.go, CNPG 1.27) refuses a Cluster whose CPU or memory
/// request exceeds its limit; kube-apiserver answers with the webhook's 422, its message prefixed
/// `admission webhook "vcluster.cnpg.io" denied the request: `. Equal values are accepted.
#[tokio::test]
async fn cnpg_webhook_refuses_a_cluster_request_above_its_limit() {
    let (_s, client) = start().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let obj = |name: &str, resources: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": name},
            "spec": {"instances": 1, "storage": {"size": "1Gi"}, "resources": resources}}),
        )
        .unwrap()
    };
    let err = api_error(
        clusters
            .create(
                &PostParams::default(),
                &obj(
                    "db",
                    json!({"requests": {"cpu": "0.5", "memory": "512Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        r#"admission webhook "vcluster.cnpg.io" denied the request: Cluster.postgresql.cnpg.io "db" is invalid: [spec.resources.requests.cpu: Invalid value: "500m": CPU request is greater than the limit, spec.resources.requests.memory: Invalid value: "512Mi": Memory request is greater than the limit]"#
    );
    clusters
        .create(
            &PostParams::default(),
            &obj(
                "db",
                json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}),
            ),
        )
        .await
        .unwrap();
}

/// CloudNativePG's validating webhook (`validateStorageConfigurationSize` in
/// internal/webhook/v1/cluster_webhook.go, CNPG 1.27) refuses a Cluster whose `spec.storage`
/// has neither a `size` nor a storage request in its `pvcTemplate`: CNPG could not size the
/// instances' PersistentVolumeClaims.
#[tokio::test]
async fn cnpg_webhook_refuses_a_cluster_without_a_storage_size() {
    let (_s, client) = start().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let obj = |storage: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "db"}, "spec": {"instances": 1, "storage": storage}}),
        )
        .unwrap()
    };
    let err = api_error(
        clusters
            .create(&PostParams::default(), &obj(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        r#"admission webhook "vcluster.cnpg.io" denied the request: Cluster.postgresql.cnpg.io "db" is invalid: spec.storage.size: Invalid value: "": Size not configured. Please add it, or a storage request in the pvcTemplate."#
    );
    clusters
        .create(
            &PostParams::default(),
            &obj(json!({"pvcTemplate": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .unwrap();
}

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The KumikoApp CRD loads; the valid examples are accepted and every example under
/// examples/invalid is rejected with 422 (or 400 for an unknown field under Strict).
#[tokio::test]
async fn kumikoapp_crd_accepts_examples_and_rejects_invalid_ones() {
    let (_server, client) = start().await;
    let crd: CustomResourceDefinition = serde_saphyr_from(&repo_file("crds/kumikoapp.yaml"));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kumiko.so", "v1alpha1", "KumikoApp"),
        "kumikoapps",
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut checked = 0;
    for (dir, valid) in [(root.clone(), true), (root.join("invalid"), false)] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in text
                .split("\n---")
                .filter(|d| d.contains("kind: KumikoApp"))
            {
                let obj: DynamicObject = serde_saphyr_from(doc);
                let ns = obj.namespace().unwrap_or_else(|| "default".into());
                let _ = namespaces
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
                    )
                    .await;
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
                let (code, _, body) = send_raw(
                    &client,
                    "POST",
                    &format!(
                        "/apis/kumiko.so/v1alpha1/namespaces/{ns}/kumikoapps?fieldValidation=Strict"
                    ),
                    "application/json",
                    serde_json::to_string(&obj).unwrap(),
                )
                .await;
                if valid {
                    assert_eq!(code, 201, "{} should be accepted: {body}", path.display());
                    api.delete(&obj.name_any(), &DeleteParams::default())
                        .await
                        .unwrap();
                } else {
                    assert!(
                        matches!(code, 400 | 422),
                        "{} should be rejected: {body}",
                        path.display()
                    );
                    assert_eq!(body["kind"], "Status");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "found the examples");
}

fn serde_saphyr_from<T: serde::de::DeserializeOwned>(text: &str) -> T {
    let v: Value = serde_saphyr::from_str(text).expect("yaml");
    serde_json::from_value(v).expect("object")
}

/// "Controlling Access to the Kubernetes API" and "Authenticating": the server speaks TLS with a
/// certificate its kubeconfig's CA signed, and a request without a token it knows is 401
/// Unauthorized (anonymous requests are disabled, `--anonymous-auth=false`).
#[tokio::test]
async fn requests_without_a_known_bearer_token_are_unauthorized() {
    let (server, client) = start().await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.list(&ListParams::default()).await.unwrap();

    for token in [None, Some("not-a-token")] {
        let mut config = server.client_config().unwrap();
        config.headers.clear();
        if let Some(token) = token {
            config.headers.push((
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            ));
        }
        let anonymous: Api<ConfigMap> = Api::default_namespaced(Client::try_from(config).unwrap());
        let error = api_error(anonymous.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(error.code, 401, "{token:?}");
        assert_eq!(error.reason, "Unauthorized");
    }

    // A client that does not trust the server's CA does not get through TLS.
    let mut untrusting = server.client_config().unwrap();
    untrusting.root_cert = None;
    let untrusting: Api<ConfigMap> = Api::default_namespaced(Client::try_from(untrusting).unwrap());
    assert!(untrusting.list(&ListParams::default()).await.is_err());
}

/// "Authenticating", service account tokens, and "Using RBAC Authorization": a token issued for
/// a ServiceAccount identifies `system:serviceaccount:<namespace>:<name>`; what it may do is what
/// RBAC grants it (403 otherwise, worded as kube-apiserver words it); like a bound token it stops
/// working when the ServiceAccount is deleted.
#[tokio::test]
async fn a_service_account_may_do_what_rbac_grants_until_its_account_is_deleted() {
    let (server, client) = start().await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::default_namespaced(client.clone());
    let account = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap(),
        )
        .await
        .unwrap();
    let token = server
        .cluster()
        .authenticator()
        .issue_service_account_token("default", "robot", &account.uid().unwrap());
    let mut config = server.client_config().unwrap();
    config.headers = vec![(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    )];
    let robot_client = Client::try_from(config).unwrap();
    let robot: Api<ConfigMap> = Api::default_namespaced(robot_client.clone());
    let denied = api_error(robot.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(denied.code, 403);
    assert_eq!(denied.reason, "Forbidden");
    assert_eq!(
        denied.message,
        "configmaps is forbidden: User \"system:serviceaccount:default:robot\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );

    // A Role and a RoleBinding in default: reading ConfigMaps there, nothing else.
    let rbac_api = |plural: &str| {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            "default",
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(
                    "rbac.authorization.k8s.io",
                    "v1",
                    if plural == "roles" {
                        "Role"
                    } else {
                        "RoleBinding"
                    },
                ),
                plural,
            ),
        )
    };
    rbac_api("roles")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})).unwrap(),
        )
        .await
        .unwrap();
    rbac_api("rolebindings")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}, "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]})).unwrap(),
        )
        .await
        .unwrap();
    robot.list(&ListParams::default()).await.unwrap();
    let created = api_error(
        robot
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(created.code, 403);
    let elsewhere: Api<ConfigMap> = Api::namespaced(robot_client.clone(), "kube-system");
    assert_eq!(
        api_error(elsewhere.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );

    // SelfSubjectAccessReview, as `kubectl auth can-i` asks it (every authenticated user may).
    let can_i = |verb: &str| {
        let robot_client = robot_client.clone();
        let verb = verb.to_owned();
        async move {
            let (code, _, review) = send_raw(
                &robot_client,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "application/json",
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": "configmaps"}}}).to_string(),
            )
            .await;
            assert_eq!(code, 201, "{review}");
            review["status"]["allowed"].as_bool().unwrap()
        }
    };
    assert!(can_i("list").await);
    assert!(!can_i("delete").await);

    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .unwrap();
    let error = api_error(robot.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(error.code, 401);
}

/// Immutable fields of the built-in kinds (each kind's `ValidateXUpdate` in kubernetes
/// `pkg/apis/*/validation`): a Job's pod template and selector, a Deployment's selector
/// (`apps/v1`), and a Service's `clusterIP` once set. Changing one is 422 Invalid naming the field,
/// and the stored object stays as it was.
#[tokio::test]
async fn immutable_fields_of_jobs_deployments_and_services_are_422() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Service;
    let (_s, client) = start().await;
    let params = PostParams::default();
    let patch = PatchParams::default();
    let invalid_field = |error: kube::Error| {
        let status = api_error(error);
        assert_eq!(status.code, 422, "{status:?}");
        assert_eq!(status.reason, "Invalid");
        let details = status.details.expect("details");
        details
            .causes
            .iter()
            .map(|cause| cause.field.clone())
            .collect::<Vec<_>>()
    };

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "app:1"}]}}}
    }))
    .unwrap();
    jobs.create(&params, &job).await.unwrap();
    let error = jobs
        .patch(
            "migrate",
            &patch,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "app:2"}]}}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(error), ["spec.template"]);
    let stored = jobs.get("migrate").await.unwrap();
    let image = stored.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("app:1"));

    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "api"}},
                "spec": {"containers": [{"name": "web", "image": "app:1"}]}}}
    }))
    .unwrap();
    deployments.create(&params, &deployment).await.unwrap();
    let error = deployments
        .patch(
            "web",
            &patch,
            &Patch::Merge(
                json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "api"}}}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(error), ["spec.selector"]);

    let services: Api<Service> = Api::default_namespaced(client.clone());
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = services.create(&params, &service).await.unwrap();
    let allocated = created
        .spec
        .unwrap()
        .cluster_ip
        .expect("a ClusterIP allocated");
    let error = services
        .patch(
            "web",
            &patch,
            &Patch::Merge(
                json!({"spec": {"clusterIP": "127.99.99.99", "clusterIPs": ["127.99.99.99"]}}),
            ),
        )
        .await
        .unwrap_err();
    assert!(invalid_field(error).contains(&"spec.clusterIPs[0]".to_owned()));
    let stored = services.get("web").await.unwrap();
    assert_eq!(stored.spec.unwrap().cluster_ip, Some(allocated));
}

/// The scale subresource ("Scale v1 autoscaling" in the API reference; kube-apiserver's
/// Deployment `ScaleREST`): an `autoscaling/v1` Scale of `spec.replicas`, `status.replicas` and the
/// selector; PUT with a stale resourceVersion is 409, without one it is unconditional; merge,
/// strategic and JSON patches apply to the Scale; negative replicas are 422; a kind without a
/// scale subresource answers 404; discovery lists `deployments/scale` and `replicasets/scale` as
/// `autoscaling/v1` `Scale`.
#[tokio::test]
async fn scale_subresource_reads_and_writes_the_replica_count() {
    let (_server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:1"}]}}}
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (code, _, scale) = send_raw(&client, "GET", path, "application/json", String::new()).await;
    assert_eq!(code, 200);
    assert_eq!(
        (scale["apiVersion"].as_str(), scale["kind"].as_str()),
        (Some("autoscaling/v1"), Some("Scale"))
    );
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(
        scale["metadata"]["resourceVersion"].as_str(),
        created.metadata.resource_version.as_deref()
    );

    // PUT: unconditional without a resourceVersion, a precondition with one.
    let put = |replicas: i64, rv: Option<&str>| {
        let mut body = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas}});
        if let Some(rv) = rv {
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        body.to_string()
    };
    let (code, _, written) = send_raw(&client, "PUT", path, "application/json", put(2, None)).await;
    assert_eq!(code, 200, "{written}");
    assert_eq!(written["spec"]["replicas"], 2);
    let stale = created.metadata.resource_version.clone().unwrap();
    let (code, _, conflict) = send_raw(
        &client,
        "PUT",
        path,
        "application/json",
        put(3, Some(&stale)),
    )
    .await;
    assert_eq!(code, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );

    // PATCH: merge, strategic merge and JSON patches of the Scale.
    for (content_type, body, expected) in [
        (
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
            4,
        ),
        (
            "application/strategic-merge-patch+json",
            json!({"spec": {"replicas": 5}}),
            5,
        ),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 6}]),
            6,
        ),
    ] {
        let (code, _, patched) =
            send_raw(&client, "PATCH", path, content_type, body.to_string()).await;
        assert_eq!(code, 200, "{content_type}: {patched}");
        assert_eq!(patched["spec"]["replicas"], expected, "{content_type}");
    }
    let scaled = deployments.get("web").await.unwrap();
    assert_eq!(scaled.spec.as_ref().unwrap().replicas, Some(6));
    let entry = scaled
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.subresource.as_deref() == Some("scale"))
        .expect("a managedFields entry of the scale subresource");
    assert_eq!(entry.operation.as_deref(), Some("Update"));
    let fields = serde_json::to_value(&entry.fields_v1).unwrap();
    assert!(fields["f:spec"].get("f:replicas").is_some(), "{fields}");
    let (code, _, invalid) = send_raw(
        &client,
        "PATCH",
        path,
        "application/merge-patch+json",
        json!({"spec": {"replicas": -1}}).to_string(),
    )
    .await;
    assert_eq!(code, 422, "{invalid}");

    // Only kinds with a scale subresource have one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "a:1"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let (code, _, _) = send_raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/p/scale",
        "application/json",
        String::new(),
    )
    .await;
    assert_eq!(code, 404);

    let (_, _, resources) = send_raw(
        &client,
        "GET",
        "/apis/apps/v1",
        "application/json",
        String::new(),
    )
    .await;
    for name in ["deployments/scale", "replicasets/scale"] {
        let entry = resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in discovery"));
        assert_eq!(
            (
                entry["group"].as_str(),
                entry["version"].as_str(),
                entry["kind"].as_str()
            ),
            (Some("autoscaling"), Some("v1"), Some("Scale"))
        );
    }
}

/// "Kubernetes Protobuf encoding" (API concepts): a client whose first choice is
/// `application/vnd.kubernetes.protobuf` (client-go's typed clients: kubectl's, Helm's) gets
/// built-in objects, lists and Status errors in protobuf: the `k8s\0` magic and a `runtime.Unknown`
/// around the message, which k8s-pb's typed messages (an independent decoder) read back. A client
/// that asks for JSON first, or for a Table, gets JSON.
#[tokio::test]
async fn protobuf_is_answered_to_clients_that_ask_for_it_first() {
    use k8s_pb::api::core::v1::{Secret as PbSecret, SecretList};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::Status as PbStatus;
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    use prost::Message;
    let (_s, client) = start().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"app": "shop"}},
        "type": "Opaque",
        "data": {"password": "czNjcmV0"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let get = |path: &'static str, accept: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::builder()
                .uri(path)
                .header("Accept", accept)
                .body(kube::client::Body::empty())
                .unwrap();
            let response = client.send(request).await.unwrap();
            let code = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|value| value.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let bytes = response.into_body().collect_bytes().await.unwrap();
            (code, content_type, bytes.to_vec())
        }
    };
    let unwrap_envelope = |bytes: &[u8]| {
        let envelope = bytes.strip_prefix(b"k8s\0").expect("the protobuf magic");
        Unknown::decode(envelope).expect("a runtime.Unknown")
    };
    let protobuf_first = "application/vnd.kubernetes.protobuf, application/json";

    let (code, content_type, body) =
        get("/api/v1/namespaces/default/secrets/db", protobuf_first).await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "application/vnd.kubernetes.protobuf")
    );
    let unknown = unwrap_envelope(&body);
    let type_meta = unknown.type_meta.unwrap();
    assert_eq!(type_meta.api_version.as_deref(), Some("v1"));
    assert_eq!(type_meta.kind.as_deref(), Some("Secret"));
    let secret = PbSecret::decode(unknown.raw.unwrap().as_slice()).unwrap();
    let metadata = secret.metadata.unwrap();
    assert_eq!(metadata.name.as_deref(), Some("db"));
    assert!(metadata.creation_timestamp.unwrap().seconds.unwrap() > 1_700_000_000);
    assert_eq!(
        secret.data.get("password").map(Vec::as_slice),
        Some(&b"s3cret"[..])
    );

    let (_, _, body) = get("/api/v1/namespaces/default/secrets", protobuf_first).await;
    let list = SecretList::decode(unwrap_envelope(&body).raw.unwrap().as_slice()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.unwrap().resource_version.is_some());

    let (code, content_type, body) =
        get("/api/v1/namespaces/default/secrets/nope", protobuf_first).await;
    assert_eq!(
        (code, content_type.as_str()),
        (404, "application/vnd.kubernetes.protobuf")
    );
    let status = PbStatus::decode(unwrap_envelope(&body).raw.unwrap().as_slice()).unwrap();
    assert_eq!(status.reason.as_deref(), Some("NotFound"));
    assert_eq!(status.code, Some(404));

    let (_, content_type, _) = get(
        "/api/v1/namespaces/default/secrets/db",
        "application/json, application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(content_type, "application/json");
    let (_, content_type, _) = get(
        "/api/v1/namespaces/default/secrets",
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
    )
    .await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
}

/// "Kubernetes Protobuf encoding" (API concepts, "Streaming"): a watch whose client prefers
/// protobuf is answered as `application/vnd.kubernetes.protobuf;stream=watch`, one
/// length-prefixed frame per event, each a `WatchEvent` in the envelope whose `object.raw` is the
/// object's own protobuf body.
#[tokio::test]
async fn a_watch_is_streamed_in_protobuf_frames_to_clients_that_ask_for_it_first() {
    use http_body_util::BodyExt as _;
    use k8s_pb::api::core::v1::ConfigMap as PbConfigMap;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent as PbWatchEvent;
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    use prost::Message;
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("first", &[]))
        .await
        .unwrap();
    let request = http::Request::builder()
        .uri("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0")
        .header(
            "Accept",
            "application/vnd.kubernetes.protobuf;stream=watch, application/json",
        )
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let frame = loop {
        if buffer.len() >= 4 {
            let length = u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize;
            if buffer.len() >= 4 + length {
                break buffer[4..4 + length].to_vec();
            }
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5s")
            .expect("the stream is open")
            .unwrap();
        if let Ok(chunk) = frame.into_data() {
            buffer.extend_from_slice(&chunk);
        }
    };
    let envelope = Unknown::decode(frame.strip_prefix(b"k8s\0").unwrap()).unwrap();
    assert_eq!(
        envelope.type_meta.unwrap().kind.as_deref(),
        Some("WatchEvent")
    );
    let event = PbWatchEvent::decode(envelope.raw.unwrap().as_slice()).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let object = event.object.unwrap().raw.unwrap();
    let inner = Unknown::decode(object.strip_prefix(b"k8s\0").unwrap()).unwrap();
    let config_map = PbConfigMap::decode(inner.raw.unwrap().as_slice()).unwrap();
    assert_eq!(config_map.metadata.unwrap().name.as_deref(), Some("first"));
}

/// The API server counts requests by verb (kube-apiserver's `apiserver_request_total{verb}`; the
/// verbs are the authorizer's, `requestinfo.go`): kube-sim keeps the count per user as well, so a
/// benchmark can read a client's reads and writes from what the server saw.
#[tokio::test]
async fn requests_are_counted_per_user_and_verb_as_the_server_saw_them() {
    let (server, client) = start().await;
    let user = "kube-sim-admin";
    let before = server.cluster().requests_of(user);
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    api.get("a").await.unwrap();
    api.get_opt("missing").await.unwrap();
    api.list(&Default::default()).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let after = server.cluster().requests_of(user);
    let delta =
        |verb: &str| after.get(verb).copied().unwrap_or(0) - before.get(verb).copied().unwrap_or(0);
    assert_eq!(
        (delta("create"), delta("get"), delta("list"), delta("patch")),
        (1, 2, 1, 1)
    );
    assert!(server.cluster().requests_of("someone-else").is_empty());
}
