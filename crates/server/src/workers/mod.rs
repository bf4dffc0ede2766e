//! Job handlers run by the background workers (registered in [`crate::jobs::all`]).

pub mod debates;
pub mod explain_batch;
