//! aragora-marketplace
