//! The end-to-end suite for the Kumiko operator (filled by the reconciler issue).
