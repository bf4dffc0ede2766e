//! Background job handlers, one module per capability (registered in `crate::jobs::all`).

pub mod explain_batch;
