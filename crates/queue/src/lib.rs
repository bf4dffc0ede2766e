//! aragora-queue
