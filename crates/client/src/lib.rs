//! aragora-client
