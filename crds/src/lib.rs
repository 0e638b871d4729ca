//! KumikoApp API.
