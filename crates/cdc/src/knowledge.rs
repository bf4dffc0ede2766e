//! Knowledge-mound indexing of changes: an idempotent upsert keyed by (connector, table, primary
//! key); DELETE removes the item. Items carry `source_type` `cdc`.
//!
//! The handler talks to a [`KnowledgeSink`], so it works with the server's knowledge mound, with
//! [`MemoryKnowledgeSink`] in tests, or with anything a library user provides.

use crate::{ChangeEvent, ChangeHandler, ChangeOperation, HandlerError};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// `source_type` of knowledge items written by CDC.
pub const SOURCE_TYPE: &str = aragora_store::connectors::KNOWLEDGE_SOURCE_TYPE;

/// One knowledge item as CDC writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeItem {
    /// `<connector_id>/<schema>.<table>/<canonical primary key>`: the upsert key.
    pub source_id: String,
    pub title: String,
    pub content: String,
    /// connector_id, database, table, primary_key, operation, event_id, sequence_number, data.
    pub metadata: Value,
}

/// Where [`KnowledgeMoundHandler`] writes. `apply` must be atomic and idempotent: upserts replace
/// the item with the same `source_id`; deletes of missing items succeed.
#[async_trait]
pub trait KnowledgeSink: Send + Sync {
    async fn apply(
        &self,
        upserts: Vec<KnowledgeItem>,
        deletes: Vec<String>,
    ) -> Result<(), HandlerError>;
}

/// In-memory sink (tests, library use without a server).
#[derive(Default)]
pub struct MemoryKnowledgeSink {
    items: Mutex<BTreeMap<String, KnowledgeItem>>,
}

impl MemoryKnowledgeSink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn items(&self) -> BTreeMap<String, KnowledgeItem> {
        self.items.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.items.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl KnowledgeSink for MemoryKnowledgeSink {
    async fn apply(
        &self,
        upserts: Vec<KnowledgeItem>,
        deletes: Vec<String>,
    ) -> Result<(), HandlerError> {
        let mut items = self.items.lock();
        for d in deletes {
            items.remove(&d);
        }
        for u in upserts {
            items.insert(u.source_id.clone(), u);
        }
        Ok(())
    }
}

/// The server's Knowledge Mound (`knowledge_items`): a batch is one transaction of deletes and a
/// multi-row upsert, keyed by (workspace, `cdc`, source id).
pub struct StoreKnowledgeSink {
    db: aragora_store::Db,
    workspace: String,
}

impl StoreKnowledgeSink {
    pub fn new(db: aragora_store::Db, workspace: impl Into<String>) -> Self {
        StoreKnowledgeSink {
            db,
            workspace: workspace.into(),
        }
    }
}

/// Source keys longer than the mound accepts keep their readable head and a digest of the rest.
fn fit_key(key: String) -> String {
    use aragora_knowledge::MAX_SOURCE_KEY_CHARS;
    if key.chars().count() <= MAX_SOURCE_KEY_CHARS {
        return key;
    }
    // SHA-256 as before event ids moved to XXH3, so keys already stored stay the same.
    use sha2::{Digest, Sha256};
    let sum = Sha256::new()
        .chain_update(b"key\0")
        .chain_update(key.as_bytes())
        .finalize();
    let digest = format!("chg-{}", hex::encode(&sum[..16]));
    let head: String = key
        .chars()
        .take(MAX_SOURCE_KEY_CHARS - digest.len() - 1)
        .collect();
    format!("{head}#{digest}")
}

impl StoreKnowledgeSink {
    async fn apply_part(
        &self,
        items: Vec<aragora_store::knowledge::NewItem>,
        deletes: Vec<String>,
    ) -> Result<(), HandlerError> {
        use aragora_store::knowledge::{delete_by_source_in, upsert_many_in};
        let mut tx = self.db.begin().await?;
        for key in deletes {
            delete_by_source_in(&mut tx, &self.workspace, SOURCE_TYPE, &key).await?;
        }
        upsert_many_in(&mut tx, self.db.dialect(), &self.workspace, &items).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Batches at least this large are written over several connections on PostgreSQL.
const PARALLEL_FROM: usize = 512;
const PARTS: usize = 4;

#[async_trait]
impl KnowledgeSink for StoreKnowledgeSink {
    /// Keys are distinct within a batch, so a large batch is split by key into parts written
    /// concurrently (PostgreSQL; SQLite has one writer). A failed part fails the batch, which is
    /// then retried whole — the upserts and deletes are idempotent.
    async fn apply(
        &self,
        upserts: Vec<KnowledgeItem>,
        deletes: Vec<String>,
    ) -> Result<(), HandlerError> {
        use aragora_knowledge::MAX_CONTENT_CHARS;
        use aragora_store::knowledge::NewItem;
        let items: Vec<NewItem> = upserts
            .into_iter()
            .map(|u| NewItem {
                source_type: SOURCE_TYPE.into(),
                source_key: fit_key(u.source_id),
                content: if u.content.chars().count() > MAX_CONTENT_CHARS {
                    u.content.chars().take(MAX_CONTENT_CHARS).collect()
                } else {
                    u.content
                },
                metadata: u.metadata,
                confidence: 1.0,
            })
            .collect();
        let deletes: Vec<String> = deletes.into_iter().map(fit_key).collect();
        let parallel = self.db.dialect() == aragora_store::Dialect::Postgres
            && items.len() + deletes.len() >= PARALLEL_FROM;
        if !parallel {
            return self.apply_part(items, deletes).await;
        }
        let part = |key: &str| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % PARTS as u64) as usize
        };
        let mut item_parts: Vec<Vec<NewItem>> = (0..PARTS).map(|_| Vec::new()).collect();
        let mut delete_parts: Vec<Vec<String>> = (0..PARTS).map(|_| Vec::new()).collect();
        for i in items {
            item_parts[part(&i.source_key)].push(i);
        }
        for d in deletes {
            delete_parts[part(&d)].push(d);
        }
        let results = futures::future::join_all(
            item_parts
                .into_iter()
                .zip(delete_parts)
                .filter(|(i, d)| !i.is_empty() || !d.is_empty())
                .map(|(i, d)| self.apply_part(i, d)),
        )
        .await;
        results.into_iter().collect()
    }
}

/// The upsert key of a row.
pub fn source_id(
    connector_id: &str,
    schema_table: &str,
    primary_key: &Map<String, Value>,
) -> String {
    format!(
        "{connector_id}/{schema_table}/{}",
        crate::canonical_key(primary_key)
    )
}

/// Writes changes into a knowledge sink.
pub struct KnowledgeMoundHandler {
    sink: Arc<dyn KnowledgeSink>,
}

impl KnowledgeMoundHandler {
    pub fn new(sink: Arc<dyn KnowledgeSink>) -> Self {
        KnowledgeMoundHandler { sink }
    }

    /// The item an INSERT/UPDATE event produces.
    pub fn item_for(event: &ChangeEvent) -> KnowledgeItem {
        let key = source_id(&event.connector_id, &event.table, &event.primary_key);
        Self::item_with_key(event, key)
    }

    /// [`item_for`](Self::item_for) with the event's source id already computed.
    fn item_with_key(event: &ChangeEvent, source_id: String) -> KnowledgeItem {
        let pk_text: Vec<String> = {
            let mut keys: Vec<&String> = event.primary_key.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| match &event.primary_key[k] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        };
        let title = format!("{} {}", event.table, pk_text.join("/"));
        // The row itself rides along unless it would make the metadata too large for the mound
        // (the content always has it).
        let data_size: usize = event
            .data
            .values()
            .map(|v| match v {
                Value::String(s) => s.len() + 8,
                _ => 24,
            })
            .sum();
        let data = if data_size <= 32 * 1024 {
            Value::Object(event.data.clone())
        } else {
            Value::Null
        };
        KnowledgeItem {
            source_id,
            content: crate::render_row(&event.table, &event.primary_key, &event.data),
            title: title.clone(),
            metadata: json!({
                "title": title,
                "connector_id": event.connector_id,
                "source": event.source_type,
                "database": event.database,
                "table": event.table,
                "primary_key": event.primary_key,
                "operation": event.operation,
                "event_id": event.id,
                "sequence_number": event.sequence_number,
                "timestamp": event.timestamp,
                "data": data,
            }),
        }
    }

    /// The key the row had before an UPDATE that changed its primary key, if it did.
    fn previous_key(event: &ChangeEvent) -> Option<Map<String, Value>> {
        if event.operation != ChangeOperation::Update || event.old_data.is_empty() {
            return None;
        }
        let mut old = Map::new();
        for k in event.primary_key.keys() {
            old.insert(k.clone(), event.old_data.get(k)?.clone());
        }
        (old != event.primary_key).then_some(old)
    }
}

#[async_trait]
impl ChangeHandler for KnowledgeMoundHandler {
    fn name(&self) -> String {
        "knowledge_mound".into()
    }

    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    /// Coalesces the batch by key (last change wins), then applies it atomically.
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        // key → Some(item) for upsert, None for delete; insertion order is irrelevant because
        // keys are distinct after coalescing.
        let mut last: HashMap<String, Option<&ChangeEvent>> = HashMap::with_capacity(events.len());
        for e in events {
            if let Some(old) = Self::previous_key(e) {
                last.insert(source_id(&e.connector_id, &e.table, &old), None);
            }
            let key = source_id(&e.connector_id, &e.table, &e.primary_key);
            match e.operation {
                ChangeOperation::Delete => last.insert(key, None),
                _ => last.insert(key, Some(e)),
            };
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for (key, e) in last {
            match e {
                Some(e) => upserts.push(Self::item_with_key(e, key)),
                None => deletes.push(key),
            }
        }
        self.sink.apply(upserts, deletes).await
    }
}
