//! aragora-debate
