//! aragora-explain
