//! The API's Service: port 80 to the container's `http` port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Context;
use super::pod::{HTTP_PORT_NAME, Process};

/// The API Service (ClusterIP, port 80 to the container's `http` port).
pub(super) fn service(context: &Context<'_>) -> Service {
    let component = Process::Api.name();
    Service {
        metadata: context.metadata(context.names().api.clone(), component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(context.selector_labels(component)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_owned()),
                port: 80,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
