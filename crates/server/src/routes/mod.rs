//! HTTP routes, one module per capability.

pub mod explain;
pub mod ops;
pub mod tokens;
pub mod workers;
