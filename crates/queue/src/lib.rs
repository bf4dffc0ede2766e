//! A durable job queue in the application database, and the worker runtime that drains it.
//!
//! Jobs are rows in `jobs`: `ready` → `running` (claimed with a lease) → deleted when complete, or
//! back to `ready` with exponential backoff on failure, or `dead` after `max_attempts` (kept for
//! inspection; a handler's [`JobHandler::on_dead`] runs in the transaction that buries one of its
//! jobs). Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL and an atomic
//! `UPDATE … RETURNING` on SQLite (one writer connection makes it serial). A lease that expires
//! (its worker died) puts the job back to `ready`. Every state change is fenced by `worker_id`,
//! so a worker that lost its lease cannot complete a job someone else now runs.

mod queue;
mod runtime;

pub use queue::{ClaimedJob, JOB_CHANNEL, NewJob, Queue, QueueDepth, backoff_delay, enqueue_in};
pub use runtime::{
    DeadJob, JobError, JobHandler, ReserveError, WorkerConfig, WorkerHandle, WorkerInfo,
    list_workers, reserve_worker_id, spawn_worker,
};
