//! Shared test helpers for operators.
