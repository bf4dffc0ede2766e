//! aragora-server
