//! HTTP routes, one module per capability.

pub mod marketplace;
pub mod ops;
pub mod tokens;
pub mod workers;
