//! aragora-store
