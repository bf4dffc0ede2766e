//! aragora-knowledge
