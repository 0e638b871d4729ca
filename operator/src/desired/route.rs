//! The API's route from outside the cluster (`spec.api.expose`): a `networking.k8s.io/v1` Ingress,
//! or a Gateway API HTTPRoute (with a cert-manager Certificate when an issuer signs its TLS), both
//! to the API Service's port 80. See [`kumiko_crds::expose`] for the cert-manager rules followed.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use kumiko_crds::{ExposeSpec, IssuerKind};

use super::Context;
use super::pod::{HTTP_PORT_NAME, Process};
use crate::gateway_api::{
    BackendRef, Certificate, CertificateIssuerRef, CertificateSpec, HTTPRoute, HttpRouteMatch,
    HttpRouteRule, HttpRouteSpec, ParentReference, PathMatch,
};

/// cert-manager's ingress-shim annotation naming a ClusterIssuer.
pub const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";
/// cert-manager's ingress-shim annotation naming an Issuer in the Ingress's namespace.
pub const ISSUER_ANNOTATION: &str = "cert-manager.io/issuer";

/// The port of the API Service the route sends traffic to (see `service`).
const SERVICE_PORT: i32 = 80;

/// The route of the API, by the kind the spec chose.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// A `networking.k8s.io/v1` Ingress.
    Ingress(Box<Ingress>),
    /// A Gateway API HTTPRoute, and the Certificate for its hosts when cert-manager issues it.
    Gateway {
        /// The HTTPRoute.
        route: Box<HTTPRoute>,
        /// The Certificate (`tls.issuer` set).
        certificate: Option<Box<Certificate>>,
    },
}

/// The Secret holding the TLS certificate of `expose` for app `app`: the spec's, else `<app>-tls`.
pub fn tls_secret_name(app: &str, expose: &ExposeSpec) -> Option<String> {
    let tls = expose.tls.as_ref()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| format!("{app}-tls")),
    )
}

/// The URLs the app answers on: one per host, `https` with TLS, ending in the path prefix.
pub fn urls(expose: &ExposeSpec) -> Vec<String> {
    let scheme = if expose.tls.is_some() {
        "https"
    } else {
        "http"
    };
    expose
        .hosts
        .iter()
        .map(|host| format!("{scheme}://{host}{}", expose.path))
        .collect()
}

/// The route of `expose` for the app of `context`.
pub(super) fn route(context: &Context<'_>, expose: &ExposeSpec) -> Route {
    match &expose.gateway {
        Some(gateway) => {
            let parent = ParentReference {
                name: gateway.name.clone(),
                namespace: gateway.namespace.clone(),
                section_name: gateway.section_name.clone(),
            };
            Route::Gateway {
                route: Box::new(http_route(context, expose, parent)),
                certificate: certificate(context, expose).map(Box::new),
            }
        }
        None => Route::Ingress(Box::new(ingress(context, expose))),
    }
}

fn ingress(context: &Context<'_>, expose: &ExposeSpec) -> Ingress {
    let names = context.names();
    let component = Process::Api.name();
    let mut metadata = context.metadata(names.api.clone(), component);
    if let Some(issuer) = expose.tls.as_ref().and_then(|tls| tls.issuer.as_ref()) {
        let key = match issuer.kind {
            IssuerKind::ClusterIssuer => CLUSTER_ISSUER_ANNOTATION,
            IssuerKind::Issuer => ISSUER_ANNOTATION,
        };
        metadata.annotations = Some(BTreeMap::from([(key.to_owned(), issuer.name.clone())]));
    }
    let http = HTTPIngressRuleValue {
        paths: vec![HTTPIngressPath {
            path: Some(expose.path.clone()),
            path_type: "Prefix".to_owned(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: names.api.clone(),
                    port: Some(ServiceBackendPort {
                        name: Some(HTTP_PORT_NAME.to_owned()),
                        number: None,
                    }),
                }),
                resource: None,
            },
        }],
    };
    let rules = if expose.hosts.is_empty() {
        vec![IngressRule {
            host: None,
            http: Some(http),
        }]
    } else {
        expose
            .hosts
            .iter()
            .map(|host| IngressRule {
                host: Some(host.clone()),
                http: Some(http.clone()),
            })
            .collect()
    };
    let tls = tls_secret_name(&names.app, expose).map(|secret| {
        vec![IngressTLS {
            hosts: Some(expose.hosts.clone()),
            secret_name: Some(secret),
        }]
    });
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: expose
                .ingress
                .as_ref()
                .and_then(|ingress| ingress.class_name.clone()),
            rules: Some(rules),
            tls,
            default_backend: None,
        }),
        status: None,
    }
}

fn http_route(context: &Context<'_>, expose: &ExposeSpec, parent: ParentReference) -> HTTPRoute {
    let names = context.names();
    let mut route = HTTPRoute::new(
        &names.api,
        HttpRouteSpec {
            parent_refs: vec![parent],
            hostnames: expose.hosts.clone(),
            rules: vec![HttpRouteRule {
                matches: vec![HttpRouteMatch {
                    path: PathMatch {
                        type_: "PathPrefix".to_owned(),
                        value: expose.path.clone(),
                    },
                }],
                backend_refs: vec![BackendRef {
                    name: names.api.clone(),
                    port: SERVICE_PORT,
                }],
            }],
        },
    );
    route.metadata = context.metadata(names.api.clone(), Process::Api.name());
    route
}

fn certificate(context: &Context<'_>, expose: &ExposeSpec) -> Option<Certificate> {
    let names = context.names();
    let issuer = expose.tls.as_ref()?.issuer.as_ref()?;
    let secret = tls_secret_name(&names.app, expose)?;
    let mut certificate = Certificate::new(
        &secret,
        CertificateSpec {
            secret_name: secret.clone(),
            dns_names: expose.hosts.clone(),
            issuer_ref: CertificateIssuerRef {
                name: issuer.name.clone(),
                kind: issuer.kind.as_str().to_owned(),
                group: "cert-manager.io".to_owned(),
            },
        },
    );
    certificate.metadata = context.metadata(secret, Process::Api.name());
    Some(certificate)
}
