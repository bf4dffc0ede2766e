//! Publishes every change as a `cdc.change` event (the outbox), whose `data` is the
//! [`ChangeEvent`]; webhook subscriptions to `cdc.change` receive it. A batch is one transaction.
//! On a replay the event is published again with the same `data.id`, which receivers use to
//! deduplicate.

use crate::{ChangeEvent, ChangeHandler, HandlerError};
use aragora_store::Db;
use aragora_store::events::{NewEvent, publish_in};
use async_trait::async_trait;

pub const EVENT_TYPE: &str = "cdc.change";

pub struct WebhookHandler {
    db: Db,
    workspace: String,
}

impl WebhookHandler {
    pub fn new(db: Db, workspace: impl Into<String>) -> Self {
        WebhookHandler {
            db,
            workspace: workspace.into(),
        }
    }
}

#[async_trait]
impl ChangeHandler for WebhookHandler {
    fn name(&self) -> String {
        "webhook".into()
    }

    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        let mut tx = self.db.begin().await?;
        for e in events {
            let data = serde_json::to_value(e).map_err(|e| HandlerError::new(e.to_string()))?;
            publish_in(
                &mut tx,
                self.db.dialect(),
                &NewEvent {
                    workspace: self.workspace.clone(),
                    event_type: EVENT_TYPE.into(),
                    data,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
