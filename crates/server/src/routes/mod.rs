//! HTTP routes, one module per capability.

pub mod connectors;
pub mod debates;
pub mod events;
pub mod explain;
pub mod knowledge;
pub mod marketplace;
pub mod ops;
pub mod tokens;
pub mod webhooks;
pub mod workers;
