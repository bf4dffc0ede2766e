//! aragora-webhooks
