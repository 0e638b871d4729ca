//! Authentication, as kube-apiserver does it with bearer tokens and anonymous requests disabled
//! (`--anonymous-auth=false`): every request carries `Authorization: Bearer <token>`, or is
//! answered 401 Unauthorized.
//!
//! Two kinds of token are known:
//! - the **admin token** of the kubeconfig the server writes: user `kube-sim-admin`, groups
//!   `system:masters` and `system:authenticated` (as the cluster-admin credentials of a kind or
//!   kubeadm cluster);
//! - **ServiceAccount tokens**, issued for a ServiceAccount (as the TokenRequest API and the
//!   kubelet's projected token do): user `system:serviceaccount:<namespace>:<name>`, groups
//!   `system:serviceaccounts`, `system:serviceaccounts:<namespace>` and `system:authenticated`
//!   ("Authenticating", Service account tokens). Like a bound token, one stops working when its
//!   ServiceAccount is deleted (or recreated with another uid).
//!
//! The `Authorization` header is removed once a request is authenticated, as kube-apiserver's
//! authentication filter does, so it never reaches a pod through the proxy.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::rbac::{MASTERS_GROUP, UserInfo, service_account_user};

/// The name of the kubeconfig's user.
pub const ADMIN_USER: &str = "kube-sim-admin";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// A ServiceAccount a token was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceAccountToken {
    namespace: String,
    name: String,
    uid: String,
}

/// The tokens the server accepts.
#[derive(Debug)]
pub struct Authenticator {
    admin_token: String,
    service_accounts: Mutex<HashMap<String, ServiceAccountToken>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

impl Authenticator {
    /// A new admin token and no ServiceAccount tokens.
    pub fn new() -> Self {
        Authenticator {
            admin_token: random_token(),
            service_accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The admin token (the kubeconfig's).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Issues a token for ServiceAccount `namespace/name` with `uid`.
    pub fn issue_service_account_token(&self, namespace: &str, name: &str, uid: &str) -> String {
        let token = random_token();
        self.service_accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                token.clone(),
                ServiceAccountToken {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                },
            );
        token
    }

    /// Who presents `token`; `service_account_uid(namespace, name)` tells the uid of a
    /// ServiceAccount that exists now. `None`: nobody (401).
    pub fn authenticate(
        &self,
        token: Option<&str>,
        service_account_uid: impl Fn(&str, &str) -> Option<String>,
    ) -> Option<UserInfo> {
        let token = token?;
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Some(UserInfo {
                name: ADMIN_USER.to_owned(),
                groups: vec![MASTERS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
            });
        }
        let account = self
            .service_accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .cloned()?;
        if service_account_uid(&account.namespace, &account.name).as_deref()
            != Some(account.uid.as_str())
        {
            return None;
        }
        Some(UserInfo {
            name: service_account_user(&account.namespace, &account.name),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{}", account.namespace),
                AUTHENTICATED_GROUP.to_owned(),
            ],
        })
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_a_cluster_admin_and_anything_else_is_nobody() {
        let authn = Authenticator::new();
        let admin = authn
            .authenticate(Some(authn.admin_token()), |_, _| None)
            .unwrap();
        assert_eq!(admin.name, ADMIN_USER);
        assert!(admin.groups.contains(&MASTERS_GROUP.to_owned()));
        assert_eq!(authn.authenticate(None, |_, _| None), None);
        assert_eq!(authn.authenticate(Some("guess"), |_, _| None), None);
    }

    #[test]
    fn a_service_account_token_identifies_its_account_while_the_account_exists() {
        let authn = Authenticator::new();
        let token = authn.issue_service_account_token("kumiko-system", "kumiko-operator", "u1");
        let exists = |namespace: &str, name: &str| {
            (namespace == "kumiko-system" && name == "kumiko-operator").then(|| "u1".to_owned())
        };
        let user = authn.authenticate(Some(&token), exists).unwrap();
        assert_eq!(
            user.name,
            "system:serviceaccount:kumiko-system:kumiko-operator"
        );
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:kumiko-system",
                "system:authenticated"
            ]
        );
        assert_eq!(
            authn.authenticate(Some(&token), |_, _| None),
            None,
            "deleted"
        );
        assert_eq!(
            authn.authenticate(Some(&token), |_, _| Some("u2".to_owned())),
            None,
            "recreated with another uid"
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
