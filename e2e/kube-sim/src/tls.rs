//! HTTPS, as kube-apiserver serves it: a certificate authority made when the server starts, a
//! serving certificate it signs for the names a client dials (`127.0.0.1`, `localhost`, and the
//! in-cluster names of the `kubernetes` Service), and a kubeconfig that carries the CA, so clients
//! verify the server as they verify a real one.
//!
//! ALPN offers HTTP/1.1 only: kube-apiserver offers `h2` as well, but every client here speaks
//! HTTP/1.1 when asked, and the upgrade requests (portforward, exec) need it anyway.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names the serving certificate is valid for, besides the listening address: how clients
/// outside reach the server, and the `kubernetes` Service's names a pod dials.
pub const SERVING_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Why the certificates or the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the certificate parameters.
    #[error("making the {what} certificate: {source}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the certificate or key.
    #[error("configuring TLS: {0}")]
    Config(#[source] tokio_rustls::rustls::Error),
}

/// The server's certificate authority and serving certificate.
pub struct Pki {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA and a serving certificate for [`SERVING_NAMES`] and `addresses`.
    pub fn new(addresses: &[IpAddr]) -> Result<Self, TlsError> {
        let certificate = |what| move |source| TlsError::Certificate { what, source };
        let ca_key = KeyPair::generate().map_err(certificate("CA"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(certificate("CA"))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kube-sim-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(certificate("CA"))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(certificate("serving"))?;
        let names: Vec<String> = SERVING_NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let mut params = CertificateParams::new(names).map_err(certificate("serving"))?;
        params
            .subject_alt_names
            .extend(addresses.iter().map(|address| SanType::IpAddress(*address)));
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = params
            .signed_by(&serving_key, &issuer)
            .map_err(certificate("serving"))?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> =
            vec![serving.der().clone(), ca_cert.der().clone()];
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Accepts TLS on connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_pem_and_the_acceptor_is_built() {
        let pki = Pki::new(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
