//! HTTP routes, one module per capability.

pub mod connectors;
pub mod ops;
pub mod tokens;
pub mod workers;
