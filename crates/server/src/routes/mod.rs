//! HTTP routes, one module per capability.

pub mod ops;
pub mod tokens;
pub mod webhooks;
pub mod workers;
