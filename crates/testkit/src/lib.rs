//! aragora-testkit
