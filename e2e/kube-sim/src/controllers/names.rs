//! Generated names and hashes, as Kubernetes makes them.

use std::fmt::Write as _;

/// The alphabet Kubernetes uses for generated names (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters, as `metadata.generateName` appends.
pub fn random_suffix() -> String {
    (0..5)
        .map(|_| {
            let index = rand::random_range(0..ALPHANUMS.len());
            char::from(ALPHANUMS[index])
        })
        .collect()
}

/// A name with a random suffix: `prefix-xxxxx`, cut so that it stays a valid name (63 characters).
pub fn generate_name(prefix: &str) -> String {
    let mut base: String = prefix.chars().take(57).collect();
    if !base.ends_with('-') {
        base.push('-');
    }
    base.push_str(&random_suffix());
    base
}

/// FNV-1a, 32 bits (the hash the Deployment controller uses for `pod-template-hash`).
fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The `pod-template-hash` of a pod template: FNV-1a of its JSON, its decimal digits mapped onto the
/// safe alphabet as Kubernetes' `SafeEncodeString` does.
pub fn pod_template_hash(template: &serde_json::Value) -> String {
    let text = template.to_string();
    let mut digits = String::new();
    let _ = write!(digits, "{}", fnv1a_32(text.as_bytes()));
    digits
        .bytes()
        .map(|byte| char::from(ALPHANUMS[usize::from(byte) % ALPHANUMS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        assert_eq!(pod_template_hash(&a), pod_template_hash(&a.clone()));
        assert_ne!(pod_template_hash(&a), pod_template_hash(&b));
        assert!(
            pod_template_hash(&a)
                .bytes()
                .all(|byte| ALPHANUMS.contains(&byte))
        );
    }

    #[test]
    fn generated_names_are_valid_and_random() {
        let name = generate_name("web-abc");
        assert!(name.starts_with("web-abc-") && name.len() == "web-abc-".len() + 5);
        assert!(generate_name(&"x".repeat(100)).len() <= 63);
        assert_ne!(generate_name("a"), generate_name("a"));
    }
}
