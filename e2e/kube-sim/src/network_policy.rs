//! NetworkPolicy validation, as kube-apiserver's `ValidateNetworkPolicySpec` does it
//! (`pkg/apis/networking/validation/validation.go`): the pod selector and every peer's selectors
//! are valid label selectors; each port has a supported protocol and a valid number or name, and
//! `endPort` only after a numeric port it does not precede; a peer names at least one of
//! `podSelector`, `namespaceSelector`, `ipBlock`, and an `ipBlock` nothing else; an `ipBlock`'s
//! `cidr` parses and each `except` is a strict subset of it (`ValidateIPBlock`); `policyTypes` has
//! at most two entries, each `Ingress` or `Egress`.
//!
//! kube-sim stores NetworkPolicies but does not enforce them: every pod reaches every other (see
//! `controllers` and the README).

use ipnet::IpNet;
use serde_json::Value;

use crate::names::{validate_label_value, validate_qualified_name};
use crate::status::Cause;
use crate::strategy::cause;

/// The causes of every rule `spec` (a NetworkPolicy's `spec`) breaks.
pub(crate) fn network_policy_causes(spec: &Value, out: &mut Vec<Cause>) {
    // `podSelector` is a struct, not a pointer, in the internal type: missing means `{}`.
    if let Some(selector) = spec.get("podSelector") {
        selector_causes(selector, "spec.podSelector", out);
    }
    for (direction, peers_key) in [("ingress", "from"), ("egress", "to")] {
        let rules = spec.get(direction).and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let at = format!("spec.{direction}[{i}]");
            let ports = rule.get("ports").and_then(Value::as_array);
            for (j, port) in ports.into_iter().flatten().enumerate() {
                port_causes(port, &format!("{at}.ports[{j}]"), out);
            }
            let peers = rule.get(peers_key).and_then(Value::as_array);
            for (j, peer) in peers.into_iter().flatten().enumerate() {
                peer_causes(peer, &format!("{at}.{peers_key}[{j}]"), out);
            }
        }
    }
    if let Some(types) = spec.get("policyTypes").and_then(Value::as_array) {
        if types.len() > 2 {
            out.push(cause(
                "FieldValueInvalid",
                "spec.policyTypes",
                "Invalid value: may not specify more than two policyTypes",
            ));
            return;
        }
        for (i, kind) in types.iter().enumerate() {
            let kind = kind.as_str().unwrap_or_default();
            if !matches!(kind, "Ingress" | "Egress") {
                out.push(cause(
                    "FieldValueNotSupported",
                    &format!("spec.policyTypes[{i}]"),
                    format!(
                        "Unsupported value: {kind:?}: supported values: \"Ingress\", \"Egress\""
                    ),
                ));
            }
        }
    }
}

/// `ValidateNetworkPolicyPort`.
fn port_causes(port: &Value, at: &str, out: &mut Vec<Cause>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str)
        && !matches!(protocol, "TCP" | "UDP" | "SCTP")
    {
        out.push(cause(
            "FieldValueNotSupported",
            &format!("{at}.protocol"),
            format!(
                "Unsupported value: {protocol:?}: supported values: \"TCP\", \"UDP\", \"SCTP\""
            ),
        ));
    }
    let end_port = port.get("endPort").and_then(Value::as_i64);
    match port.get("port") {
        Some(Value::Number(number)) => {
            let number = number.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.port"),
                    format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                ));
            }
            if let Some(end) = end_port {
                if end < number {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("{at}.endPort"),
                        format!("Invalid value: {end}: must be greater than or equal to `port`"),
                    ));
                }
                if !(1..=65535).contains(&end) {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("{at}.endPort"),
                        format!("Invalid value: {end}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.endPort"),
                    format!(
                        "Invalid value: {end}: may not be specified when `port` is non-numeric"
                    ),
                ));
            }
            if let Err(problem) = port_name(name) {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.port"),
                    format!("Invalid value: {name:?}: {problem}"),
                ));
            }
        }
        Some(_) | None => {
            if let Some(end) = end_port {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.endPort"),
                    format!(
                        "Invalid value: {end}: may not be specified when `port` is not specified"
                    ),
                ));
            }
        }
    }
}

/// `IsValidPortName`: an IANA service name (at most 15 characters, lowercase letters, digits and
/// inner single `-`, at least one letter).
fn port_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(
            "must be an IANA_SVC_NAME (at most 15 characters, matching regex [a-z0-9]([a-z0-9-]*[a-z0-9])*, with at least one letter and no '--')",
        )
    }
}

/// `ValidateNetworkPolicyPeer`.
fn peer_causes(peer: &Value, at: &str, out: &mut Vec<Cause>) {
    let mut count = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(selector) = peer.get(key).filter(|v| !v.is_null()) {
            count += 1;
            selector_causes(selector, &format!("{at}.{key}"), out);
        }
    }
    let ip_block = peer.get("ipBlock").filter(|v| !v.is_null());
    if let Some(block) = ip_block {
        count += 1;
        ip_block_causes(block, &format!("{at}.ipBlock"), out);
    }
    if count == 0 {
        out.push(cause(
            "FieldValueRequired",
            at,
            "Required value: must specify a peer",
        ));
    } else if count > 1 && ip_block.is_some() {
        out.push(cause(
            "FieldValueForbidden",
            at,
            "Forbidden: may not specify both ipBlock and another peer",
        ));
    }
}

/// `ValidateIPBlock`: the CIDR parses; each exception parses and is a strict subset of it.
fn ip_block_causes(block: &Value, at: &str, out: &mut Vec<Cause>) {
    let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or("");
    if cidr.is_empty() {
        out.push(cause(
            "FieldValueRequired",
            &format!("{at}.cidr"),
            "Required value",
        ));
        return;
    }
    let Ok(network) = cidr.parse::<IpNet>() else {
        out.push(cause(
            "FieldValueInvalid",
            &format!("{at}.cidr"),
            format!("Invalid value: {cidr:?}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
        ));
        return;
    };
    let except = block.get("except").and_then(Value::as_array);
    for (i, hole) in except.into_iter().flatten().enumerate() {
        let hole = hole.as_str().unwrap_or("");
        let field = format!("{at}.except[{i}]");
        match hole.parse::<IpNet>() {
            Ok(inner)
                if network.contains(&inner.network())
                    && inner.prefix_len() > network.prefix_len() => {}
            Ok(_) => out.push(cause(
                "FieldValueInvalid",
                &field,
                format!("Invalid value: {hole:?}: must be a strict subset of `cidr`"),
            )),
            Err(_) => out.push(cause(
                "FieldValueInvalid",
                &field,
                format!("Invalid value: {hole:?}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
            )),
        }
    }
}

/// `ValidateLabelSelector` (`apimachinery/pkg/apis/meta/v1/validation`): qualified keys, valid
/// values, `In`/`NotIn` with values and `Exists`/`DoesNotExist` without.
fn selector_causes(selector: &Value, at: &str, out: &mut Vec<Cause>) {
    let labels = selector.get("matchLabels").and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        if let Err(problem) = validate_qualified_name(key) {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{at}.matchLabels"),
                format!("Invalid value: {key:?}: {problem}"),
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if let Err(problem) = validate_label_value(value) {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{at}.matchLabels"),
                format!("Invalid value: {value:?}: {problem}"),
            ));
        }
    }
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    for (i, expression) in expressions.into_iter().flatten().enumerate() {
        let field = format!("{at}.matchExpressions[{i}]");
        let operator = expression
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or("");
        let values = expression
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match operator {
            "In" | "NotIn" if values == 0 => out.push(cause(
                "FieldValueRequired",
                &format!("{field}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if values > 0 => out.push(cause(
                "FieldValueForbidden",
                &format!("{field}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push(cause(
                "FieldValueInvalid",
                &format!("{field}.operator"),
                format!("Invalid value: {other:?}: not a valid selector operator"),
            )),
        }
        let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
        if let Err(problem) = validate_qualified_name(key) {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{field}.key"),
                format!("Invalid value: {key:?}: {problem}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reasons(spec: Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        network_policy_causes(&spec, &mut out);
        out.into_iter().map(|c| (c.field, c.reason)).collect()
    }

    #[test]
    fn a_policy_like_the_operators_is_valid() {
        let spec = json!({
            "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop"},
                "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker"]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
                "ports": [{"port": 5432, "protocol": "TCP"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": "dns-tcp"}]}]
        });
        assert_eq!(reasons(spec), Vec::<(String, String)>::new());
    }

    #[test]
    fn an_except_outside_or_equal_to_its_cidr_is_refused() {
        let spec = json!({"podSelector": {}, "egress": [{"to": [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24", "10.0.0.0/16", "nonsense"]}}
        ]}]});
        let fields: Vec<String> = reasons(spec).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "spec.egress[0].to[0].ipBlock.except[0]",
                "spec.egress[0].to[0].ipBlock.except[1]",
                "spec.egress[0].to[0].ipBlock.except[2]",
            ]
        );
    }

    #[test]
    fn an_empty_peer_and_an_ip_block_with_a_selector_are_refused() {
        let spec = json!({"podSelector": {}, "ingress": [{"from": [
            {},
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}
        ]}]});
        assert_eq!(
            reasons(spec),
            vec![
                (
                    "spec.ingress[0].from[0]".to_owned(),
                    "FieldValueRequired".to_owned()
                ),
                (
                    "spec.ingress[0].from[1]".to_owned(),
                    "FieldValueForbidden".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn bad_ports_protocols_policy_types_and_selectors_are_refused() {
        let spec = json!({
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "policyTypes": ["Ingress", "Sideways"],
            "ingress": [{"ports": [
                {"port": 0},
                {"port": 80, "endPort": 79},
                {"port": "http", "endPort": 90},
                {"port": 53, "protocol": "ICMP"}
            ]}]
        });
        let fields: Vec<String> = reasons(spec).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "spec.podSelector.matchExpressions[0].values",
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].ports[1].endPort",
                "spec.ingress[0].ports[2].endPort",
                "spec.ingress[0].ports[3].protocol",
                "spec.policyTypes[1]",
            ]
        );
    }

    #[test]
    fn more_than_two_policy_types_are_refused() {
        let spec = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]});
        assert_eq!(
            reasons(spec),
            vec![(
                "spec.policyTypes".to_owned(),
                "FieldValueInvalid".to_owned()
            )]
        );
    }
}
