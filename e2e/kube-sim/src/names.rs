//! Name and label rules of Kubernetes (apimachinery `validation` package), as pure functions.
//! Each returns the message kube-apiserver uses when the rule is broken.

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn dns1123_label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(is_label_char)
        && s.chars().next().is_some_and(is_alnum_lower)
        && s.chars().last().is_some_and(is_alnum_lower)
}

/// RFC 1123 label: at most 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
pub fn validate_dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !dns1123_label_ok(s) {
        return Err(DNS1123_LABEL_MSG.into());
    }
    Ok(())
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn validate_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if !s.split('.').all(dns1123_label_ok) {
        return Err(DNS1123_SUBDOMAIN_MSG.into());
    }
    Ok(())
}

/// RFC 1035 label (Service names): like an RFC 1123 label but starting with a letter.
pub fn validate_dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !dns1123_label_ok(s) || !s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err(DNS1035_LABEL_MSG.into());
    }
    Ok(())
}

fn qualified_name_part_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
}

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// A qualified name (label and annotation keys): optional DNS-subdomain prefix, `/`, name part.
pub fn validate_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        validate_dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !qualified_name_part_ok(name) {
        return Err(QUALIFIED_NAME_MSG.into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters like a qualified name part.
pub fn validate_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !qualified_name_part_ok(s) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into());
    }
    Ok(())
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn validate_config_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    if s == "." || s == ".." {
        return Err("must not be '.' or '..'".into());
    }
    Ok(())
}

/// The name rule kube-apiserver applies to a kind's `metadata.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds, custom resources).
    Subdomain,
    /// RFC 1123 label (Namespaces).
    Label,
    /// RFC 1035 label (Services).
    Dns1035,
    /// A path segment: anything without `/` or `%`, not `.` or `..` (Events).
    PathSegment,
}

impl NameRule {
    /// Checks a name against the rule.
    pub fn check(self, name: &str) -> Result<(), String> {
        match self {
            NameRule::Subdomain => validate_dns1123_subdomain(name),
            NameRule::Label => validate_dns1123_label(name),
            NameRule::Dns1035 => validate_dns1035_label(name),
            NameRule::PathSegment => {
                if name == "." || name == ".." {
                    Err(format!("may not be '{name}'"))
                } else if name.contains('/') {
                    Err("may not contain '/'".into())
                } else if name.contains('%') {
                    Err("may not contain '%'".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_allows_dots_label_does_not() {
        assert!(validate_dns1123_subdomain("a.b-c").is_ok());
        assert!(validate_dns1123_label("a.b").is_err());
        assert!(validate_dns1123_subdomain("Upper").is_err());
        assert!(validate_dns1123_subdomain("-a").is_err());
    }

    #[test]
    fn service_names_must_start_with_a_letter() {
        assert!(validate_dns1035_label("1abc").is_err());
        assert!(validate_dns1035_label("abc-1").is_ok());
    }

    #[test]
    fn qualified_names_take_a_prefix() {
        assert!(validate_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(validate_qualified_name("/name").is_err());
        assert!(validate_qualified_name("a/b/c").is_err());
    }

    #[test]
    fn label_values_may_be_empty_but_not_too_long() {
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value(&"a".repeat(64)).is_err());
    }
}
