//! Domain types and pure logic shared by every Aragora crate.
//!
//! Nothing in here performs I/O: no HTTP, no SQL, no clocks except [`time::now_ms`].

pub mod auth;
pub mod change;
pub mod consensus;
pub mod debate;
pub mod error;
pub mod event;
pub mod ids;
pub mod json;
pub mod page;
pub mod time;

pub use error::{Error, Result};
