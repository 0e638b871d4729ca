//! The KumikoApp's own finalizer, which applies the reclaim policy to the app's Postgres objects
//! before the app goes: the merge patches that add and remove it.

use serde_json::{Value, json};

/// The finalizer that applies the reclaim policy to the app's Postgres objects.
pub const FINALIZER: &str = "kumiko.so/reclaim";

/// `finalizers` with the operator's appended.
pub fn with_finalizer(finalizers: &[String]) -> Vec<String> {
    let mut finalizers = finalizers.to_vec();
    finalizers.push(FINALIZER.to_owned());
    finalizers
}

/// `finalizers` without the operator's.
pub fn without_finalizer(finalizers: &[String]) -> Vec<String> {
    finalizers
        .iter()
        .filter(|finalizer| *finalizer != FINALIZER)
        .cloned()
        .collect()
}

/// The merge patch that sets the KumikoApp's finalizers to `finalizers`.
pub fn patch(finalizers: &[String]) -> Value {
    json!({"metadata": {"finalizers": finalizers}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_keeps_the_others_and_removing_takes_only_the_operators() {
        let others = vec!["example.com/keep".to_owned()];
        let added = with_finalizer(&others);
        assert_eq!(added, vec!["example.com/keep", FINALIZER]);
        assert_eq!(without_finalizer(&added), others);
        assert_eq!(
            patch(&others),
            json!({"metadata": {"finalizers": ["example.com/keep"]}})
        );
    }
}
