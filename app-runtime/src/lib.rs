//! The Kumiko app runtime.
