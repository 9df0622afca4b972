//! serde input types for routes.yaml (positions kept for validation errors). STUB.
