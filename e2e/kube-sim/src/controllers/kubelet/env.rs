//! A container's environment and command line, resolved as the kubelet does it.
//!
//! Rules followed (Kubernetes documentation, "Define Environment Variables for a Container",
//! "Expose Pod Information to Containers Through Environment Variables", "Define a Command and
//! Arguments for a Container"):
//! - `envFrom` sources first, in order, each key optionally prefixed; keys that are not valid
//!   variable names are skipped; then `env`, which overrides them;
//! - `$(VAR)` in an `env` value refers to a variable defined before it; `$$` is a literal `$`;
//!   a reference to an undefined variable stays as written; `command` and `args` are expanded
//!   with the whole environment;
//! - a missing Secret or ConfigMap, or a missing key, stops the container from being created
//!   (`CreateContainerConfigError`) unless the reference is `optional`.
//!
//! Fetching the Secrets and ConfigMaps is the caller's I/O; everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use crate::controllers::quantity::Quantity;

/// The IP every pod has: they all share the host's loopback.
pub const POD_IP: &str = "127.0.0.1";
/// The name of the single simulated node.
pub const NODE_NAME: &str = "kube-sim";

/// The Secrets and ConfigMaps of the pod's namespace that a container refers to, by name
/// (`None`: the object does not exist).
#[derive(Debug, Default, Clone)]
pub struct EnvSources {
    /// Secrets by name.
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
}

/// The names of the Secrets and ConfigMaps a container's environment refers to.
pub fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for source in container.env_from.iter().flatten() {
        if let Some(secret) = &source.secret_ref {
            secrets.insert(secret.name.clone());
        }
        if let Some(config_map) = &source.config_map_ref {
            config_maps.insert(config_map.name.clone());
        }
    }
    for variable in container.env.iter().flatten() {
        let Some(from) = &variable.value_from else {
            continue;
        };
        if let Some(key) = &from.secret_key_ref {
            secrets.insert(key.name.clone());
        }
        if let Some(key) = &from.config_map_key_ref {
            config_maps.insert(key.name.clone());
        }
    }
    (secrets, config_maps)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret.string_data.clone().unwrap_or_default();
    for (key, value) in secret.data.iter().flatten() {
        data.insert(key.clone(), String::from_utf8_lossy(&value.0).into_owned());
    }
    data
}

fn config_map_data(config_map: &ConfigMap) -> BTreeMap<String, String> {
    let mut data = config_map.data.clone().unwrap_or_default();
    for (key, value) in config_map.binary_data.iter().flatten() {
        data.insert(key.clone(), String::from_utf8_lossy(&value.0).into_owned());
    }
    data
}

/// Whether `name` is a valid environment variable name for Kubernetes (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || matches!(first, '-' | '.' | '_') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Expands `$(VAR)` references with `lookup`; `$$` is a literal `$`; unknown references stay.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            output.push('$');
            rest = stripped;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match lookup(name) {
                        Some(value) => output.push_str(&value),
                        None => {
                            output.push_str("$(");
                            output.push_str(name);
                            output.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    output.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
}

fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    if let Some(value) = from_map(&meta.labels, "metadata.labels['") {
        return Ok(value);
    }
    if let Some(value) = from_map(&meta.annotations, "metadata.annotations['") {
        return Ok(value);
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => NODE_NAME.to_owned(),
        "spec.serviceAccountName" => spec
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        "status.hostIP" | "status.podIP" | "status.hostIPs" | "status.podIPs" => POD_IP.to_owned(),
        other => return Err(format!("unsupported fieldRef fieldPath: {other}")),
    })
}

fn resource_value(
    pod: &Pod,
    container: &Container,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, String> {
    let target = match &selector.container_name {
        Some(name) if !name.is_empty() => pod
            .spec
            .iter()
            .flat_map(|spec| spec.containers.iter())
            .find(|candidate| &candidate.name == name)
            .ok_or_else(|| format!("resourceFieldRef: no container named {name:?}"))?,
        _ => container,
    };
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(|| {
        format!(
            "unsupported resourceFieldRef resource: {}",
            selector.resource
        )
    })?;
    let resources = target.resources.clone().unwrap_or_default();
    let map = match kind {
        "limits" => resources.limits,
        "requests" => resources.requests,
        _ => {
            return Err(format!(
                "unsupported resourceFieldRef resource: {}",
                selector.resource
            ));
        }
    };
    let amount = match map.as_ref().and_then(|m| m.get(resource)) {
        Some(value) => Quantity::parse(&value.0).map_err(|error| error.to_string())?,
        // An unset limit is the node's allocatable amount; an unset request is zero.
        None if kind == "limits" => node_allocatable(resource).ok_or_else(|| {
            format!(
                "unsupported resourceFieldRef resource: {}",
                selector.resource
            )
        })?,
        None => Quantity::ZERO,
    };
    let divisor = match &selector.divisor {
        Some(divisor) => Quantity::parse(&divisor.0).map_err(|error| error.to_string())?,
        None => Quantity::from_units(1),
    };
    let divisor_millis = divisor.millis_ceil();
    if divisor_millis <= 0 {
        return Err("resourceFieldRef divisor must be positive".to_owned());
    }
    let amount_millis = amount.millis_ceil();
    let value = (amount_millis + divisor_millis - 1) / divisor_millis;
    Ok(value.to_string())
}

/// The simulated node's allocatable CPU (the host's cores) and memory (the host's total memory).
fn node_allocatable(resource: &str) -> Option<Quantity> {
    match resource {
        "cpu" => {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            Some(Quantity::from_units(i64::try_from(cores).unwrap_or(1)))
        }
        "memory" | "ephemeral-storage" => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib: i64 = meminfo
                .lines()
                .find(|line| line.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Quantity::parse(&format!("{kib}Ki")).ok()
        }
        _ => None,
    }
}

/// The container's environment, in order (later entries override earlier ones when applied), or
/// the `CreateContainerConfigError` message.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |env: &mut BTreeMap<String, String>, name: String, value: String| {
        if !env.contains_key(&name) {
            order.push(name.clone());
        }
        env.insert(name, value);
    };

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(reference) = &source.secret_ref {
            match sources.secrets.get(&reference.name).cloned().flatten() {
                Some(secret) => secret_data(&secret),
                None if reference.optional == Some(true) => continue,
                None => return Err(format!("secret \"{}\" not found", reference.name)),
            }
        } else if let Some(reference) = &source.config_map_ref {
            match sources.config_maps.get(&reference.name).cloned().flatten() {
                Some(config_map) => config_map_data(&config_map),
                None if reference.optional == Some(true) => continue,
                None => return Err(format!("configmap \"{}\" not found", reference.name)),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            if is_env_var_name(&name) {
                set(&mut env, name, value);
            }
        }
    }

    for variable in container.env.iter().flatten() {
        let value = if let Some(from) = &variable.value_from {
            if let Some(reference) = &from.secret_key_ref {
                let optional = reference.optional == Some(true);
                match sources.secrets.get(&reference.name).cloned().flatten() {
                    Some(secret) => match secret_data(&secret).get(&reference.key) {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                reference.key, reference.name
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("secret \"{}\" not found", reference.name)),
                }
            } else if let Some(reference) = &from.config_map_key_ref {
                let optional = reference.optional == Some(true);
                match sources.config_maps.get(&reference.name).cloned().flatten() {
                    Some(config_map) => match config_map_data(&config_map).get(&reference.key) {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                reference.key, reference.name
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("configmap \"{}\" not found", reference.name)),
                }
            } else if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path)?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(pod, container, resource)?
            } else {
                String::new()
            }
        } else {
            let raw = variable.value.clone().unwrap_or_default();
            expand(&raw, |name| env.get(name).cloned())
        };
        set(&mut env, variable.name.clone(), value);
    }

    Ok(order
        .into_iter()
        .filter_map(|name| env.get(&name).map(|value| (name.clone(), value.clone())))
        .collect())
}

/// The argument vector after the binary: `command[1..]` then `args`, expanded with `env`.
///
/// When an image maps to a local binary, that binary replaces the image's entrypoint and
/// `command[0]`; the rest of `command` and all of `args` are its arguments.
pub fn process_arguments(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    container
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(container.args.iter().flatten())
        .map(|argument| expand(argument, lookup))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"containers": [container]}
        }))
        .expect("pod")
    }

    fn sources() -> EnvSources {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "db"}, "data": {"password": "czNjcjN0", "uri": "cG9zdGdyZXM6Ly94"}
        }))
        .expect("secret");
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings"}, "data": {"LEVEL": "debug", "bad key": "x"}
        }))
        .expect("config map");
        EnvSources {
            secrets: BTreeMap::from([("db".to_owned(), Some(secret))]),
            config_maps: BTreeMap::from([("settings".to_owned(), Some(config_map))]),
        }
    }

    #[test]
    fn env_resolves_values_secrets_config_maps_and_field_refs() {
        let pod = pod(json!({"name": "app", "image": "x",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "GREETING", "value": "$(POD) in $(NS) costs $$5 $(NOPE)"}
        ]}));
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env: BTreeMap<_, _> = resolve_env(&pod, container, &sources())
            .expect("resolves")
            .into_iter()
            .collect();
        assert_eq!(env["CFG_LEVEL"], "debug");
        assert!(
            !env.contains_key("CFG_bad key"),
            "invalid names are skipped"
        );
        assert_eq!(env["PASSWORD"], "s3cr3t");
        assert_eq!(env["LEVEL"], "debug");
        assert_eq!(env["POD"], "web-1");
        assert_eq!(env["NS"], "shop");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["GREETING"], "web-1 in shop costs $5 $(NOPE)");
    }

    #[test]
    fn missing_secret_or_key_is_a_config_error_unless_optional() {
        let missing = pod(json!({"name": "app", "image": "x", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}));
        let container = &missing.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            resolve_env(&missing, container, &sources()),
            Err("secret \"absent\" not found".to_owned())
        );
        let missing_key = pod(json!({"name": "app", "image": "x", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]}));
        let container = &missing_key.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            resolve_env(&missing_key, container, &sources()),
            Err("couldn't find key nope in Secret shop/db".to_owned())
        );
        let optional = pod(json!({"name": "app", "image": "x", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": true}}}]}));
        let container = &optional.spec.as_ref().expect("spec").containers[0];
        assert_eq!(resolve_env(&optional, container, &sources()), Ok(vec![]));
    }

    #[test]
    fn env_overrides_env_from_and_keeps_first_position() {
        let pod = pod(json!({"name": "app", "image": "x",
            "envFrom": [{"secretRef": {"name": "db"}}],
            "env": [{"name": "password", "value": "override"}]}));
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env = resolve_env(&pod, container, &sources()).expect("resolves");
        assert_eq!(
            env,
            vec![
                ("password".to_owned(), "override".to_owned()),
                ("uri".to_owned(), "postgres://x".to_owned())
            ]
        );
    }

    #[test]
    fn command_tail_and_args_are_arguments_with_expansion() {
        let pod = pod(json!({"name": "app", "image": "x",
            "command": ["/app/kumiko-app", "--verbose"], "args": ["serve", "--port=$(PORT)"]}));
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env = vec![("PORT".to_owned(), "4100".to_owned())];
        assert_eq!(
            process_arguments(container, &env),
            vec!["--verbose", "serve", "--port=4100"]
        );
    }

    #[test]
    fn resource_field_ref_divides_and_rounds_up() {
        let pod = pod(json!({"name": "app", "image": "x",
        "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"}},
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
        ]}));
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env: BTreeMap<_, _> = resolve_env(&pod, container, &sources())
            .expect("resolves")
            .into_iter()
            .collect();
        assert_eq!(env["CPU"], "2");
        assert_eq!(env["MEM"], "256");
    }
}
