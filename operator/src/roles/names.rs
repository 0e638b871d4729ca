//! From a KumikoApp name to Postgres identifiers, and the comment that marks an object as an app's.
//!
//! Pure functions only; see the module documentation of [`crate::roles`] for the rule.

use super::error::Error;

/// The longest accepted app name. The longest derived identifier (`<app>_runtime`) is then
/// 48 bytes, below Postgres' limit of 63 bytes (longer identifiers are silently truncated).
pub const MAX_APP_NAME_LEN: usize = 40;

/// The prefix of the comment that records which app owns a role or a database.
pub const MARKER_PREFIX: &str = "kumiko.so/app=";

/// The longest accepted claim (`<namespace>/<name>`: 63 + 1 + 63 fits easily).
const MAX_CLAIM_LEN: usize = 253;

/// A validated app name: a DNS-1035 label of at most [`MAX_APP_NAME_LEN`] characters.
///
/// Validation is the first line of defence against hostile names; the second is that every
/// identifier is quoted by the server (`format('%I')`) when statements are built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppName(String);

impl AppName {
    /// Validates `name`: lowercase ASCII letters, digits and `-`, starting with a letter, ending
    /// with a letter or digit, 1 to [`MAX_APP_NAME_LEN`] characters.
    pub fn new(name: &str) -> Result<Self, Error> {
        let reject = |reason| Error::InvalidAppName {
            name: name.to_owned(),
            reason,
            max: MAX_APP_NAME_LEN,
        };
        if name.is_empty() {
            return Err(reject("it is empty"));
        }
        if name.len() > MAX_APP_NAME_LEN {
            return Err(reject("it is too long"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(reject(
                "it contains a character other than a-z, 0-9 and '-'",
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(reject("it does not start with a letter"));
        }
        if name.ends_with('-') {
            return Err(reject("it ends with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Postgres object names this app uses.
    pub fn object_names(&self) -> ObjectNames {
        ObjectNames {
            database: self.0.clone(),
            owner_role: format!("{}_owner", self.0),
            runtime_role: format!("{}_runtime", self.0),
        }
    }
}

impl std::fmt::Debug for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppName({:?})", self.0)
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Postgres objects of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNames {
    /// The database: `<app>`.
    pub database: String,
    /// The owner role (owns the database and its schemas; runs migrations): `<app>_owner`.
    pub owner_role: String,
    /// The runtime role (DML only; `serve` and `worker`): `<app>_runtime`.
    pub runtime_role: String,
}

/// Who owns an app's objects: a stable identity of the KumikoApp, recorded in the comment of
/// each role and the database, e.g. `<namespace>/<name>`.
///
/// It is compared on every run: an object whose comment names another claim is never adopted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Claim(String);

impl Claim {
    /// Validates a claim: 1 to 253 characters from `A-Z a-z 0-9 . _ / -`.
    pub fn new(claim: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSetting {
            field: "claim",
            reason: format!("{claim:?} {reason}; use `<namespace>/<name>` of the KumikoApp"),
        };
        if claim.is_empty() || claim.len() > MAX_CLAIM_LEN {
            return Err(invalid("must be 1 to 253 characters long"));
        }
        if !claim
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        {
            return Err(invalid(
                "may only contain A-Z, a-z, 0-9, '.', '_', '/' and '-'",
            ));
        }
        Ok(Self(claim.to_owned()))
    }

    /// The claim as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The comment that marks an object as belonging to this claim.
    pub fn marker(&self) -> String {
        format!("{MARKER_PREFIX}{}", self.0)
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({:?})", self.0)
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who an object's comment says owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The comment carries this app's claim.
    Ours,
    /// The comment carries another app's claim.
    OtherApp(String),
    /// No comment, or a comment that is not a kumiko marker.
    Nobody,
}

/// Reads an object's comment.
pub fn ownership(comment: Option<&str>, claim: &Claim) -> Ownership {
    match comment.and_then(|text| text.strip_prefix(MARKER_PREFIX)) {
        Some(owner) if owner == claim.as_str() => Ownership::Ours,
        Some(owner) => Ownership::OtherApp(owner.to_owned()),
        None => Ownership::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_database_owner_and_runtime_roles() {
        let names = AppName::new("shop-api").unwrap().object_names();
        assert_eq!(names.database, "shop-api");
        assert_eq!(names.owner_role, "shop-api_owner");
        assert_eq!(names.runtime_role, "shop-api_runtime");
    }

    #[test]
    fn longest_name_maps_to_identifiers_postgres_does_not_truncate() {
        let longest = format!("a{}", "b".repeat(MAX_APP_NAME_LEN - 1));
        let names = AppName::new(&longest).unwrap().object_names();
        assert!(
            names.runtime_role.len() <= 63,
            "{}",
            names.runtime_role.len()
        );
        assert!(AppName::new(&format!("{longest}c")).is_err());
    }

    #[test]
    fn hostile_app_names_are_rejected() {
        let hostile = [
            "",
            "shop\"; DROP ROLE postgres; --",
            "shop'",
            "shop;",
            "a$$b",
            "$$",
            "shop\u{0}",
            "café",
            "ｓｈｏｐ",
            "shop\u{202e}",
            "Shop",
            "1shop",
            "-shop",
            "shop-",
            "shop_owner",
            "shop name",
            "shop\n",
            &"a".repeat(63),
            &"a".repeat(64),
            &"é".repeat(32),
        ];
        for name in hostile {
            let error = AppName::new(name).expect_err(name);
            assert!(matches!(error, Error::InvalidAppName { .. }), "{name:?}");
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn distinct_app_names_never_share_an_object_name() {
        // Roles end in `_owner`/`_runtime` and app names cannot contain `_`, so no app's role can
        // be another app's role of the other kind, nor any app's database.
        let apps = ["a", "a-owner", "a-runtime", "b", "owner", "runtime"];
        let mut seen = std::collections::BTreeSet::new();
        for app in apps {
            let names = AppName::new(app).unwrap().object_names();
            for name in [names.database, names.owner_role, names.runtime_role] {
                assert!(seen.insert(name.clone()), "{name} produced twice");
            }
        }
    }

    #[test]
    fn ownership_is_read_from_the_marker_comment() {
        let claim = Claim::new("prod/shop").unwrap();
        assert_eq!(
            ownership(Some("kumiko.so/app=prod/shop"), &claim),
            Ownership::Ours
        );
        assert_eq!(
            ownership(Some("kumiko.so/app=dev/shop"), &claim),
            Ownership::OtherApp("dev/shop".to_owned())
        );
        assert_eq!(ownership(Some("made by hand"), &claim), Ownership::Nobody);
        assert_eq!(ownership(None, &claim), Ownership::Nobody);
    }

    #[test]
    fn claims_with_quotes_or_spaces_are_rejected() {
        assert!(Claim::new("prod/shop").is_ok());
        for bad in ["", "prod/shop'", "prod shop", "prod/shöp", &"a".repeat(254)] {
            assert!(Claim::new(bad).is_err(), "{bad:?}");
        }
    }
}
