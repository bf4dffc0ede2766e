//! aragora-cdc
