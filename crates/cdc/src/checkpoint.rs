//! Checkpoints: where a connector resumes. Saved only after every handler acknowledged every event
//! up to the position they name.

use crate::{CdcError, ChangeEvent};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// A connector's durable position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    /// Source-specific resume token (changelog id, LSN, …); empty before the first save.
    pub resume_token: String,
    /// `sequence_number` of the last acknowledged event.
    pub sequence_number: i64,
    /// Whether the initial snapshot finished (or was not wanted).
    pub snapshot_done: bool,
}

/// Persists checkpoints (and the recent-events ring the API shows).
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn load(&self, connector_id: &str) -> Result<Option<Checkpoint>, CdcError>;

    /// Saves `checkpoint` and remembers `recent` (the newest acknowledged events, oldest first).
    /// Returns [`CdcError::Fenced`] when this process no longer owns the connector.
    async fn save(
        &self,
        connector_id: &str,
        checkpoint: &Checkpoint,
        recent: &[ChangeEvent],
    ) -> Result<(), CdcError>;

    /// Forgets the connector's position (the next start snapshots again).
    async fn reset(&self, connector_id: &str) -> Result<(), CdcError>;
}

/// In-process checkpoints, for library use and tests.
#[derive(Default)]
pub struct MemoryCheckpoints {
    inner: Mutex<HashMap<String, (Checkpoint, VecDeque<ChangeEvent>)>>,
}

/// How many recent events the in-memory store and the database ring keep per connector.
pub const RECENT_EVENTS: usize = 100;

impl MemoryCheckpoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest acknowledged events, newest first.
    pub fn recent(&self, connector_id: &str, limit: usize) -> Vec<ChangeEvent> {
        self.inner
            .lock()
            .get(connector_id)
            .map(|(_, r)| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoints {
    async fn load(&self, connector_id: &str) -> Result<Option<Checkpoint>, CdcError> {
        Ok(self.inner.lock().get(connector_id).map(|(c, _)| c.clone()))
    }

    async fn save(
        &self,
        connector_id: &str,
        checkpoint: &Checkpoint,
        recent: &[ChangeEvent],
    ) -> Result<(), CdcError> {
        let mut map = self.inner.lock();
        let entry = map
            .entry(connector_id.to_string())
            .or_insert_with(|| (Checkpoint::default(), VecDeque::new()));
        entry.0 = checkpoint.clone();
        for e in recent {
            if entry.1.len() == RECENT_EVENTS {
                entry.1.pop_front();
            }
            entry.1.push_back(e.clone());
        }
        Ok(())
    }

    async fn reset(&self, connector_id: &str) -> Result<(), CdcError> {
        self.inner.lock().remove(connector_id);
        Ok(())
    }
}

/// Checkpoints in a JSON file, one connector per file: for library use across restarts (the
/// Python SDK's `checkpoint_path`). A save writes a temporary file, syncs it and renames it over
/// the old one, so a crash leaves the previous position or the new one, never a torn file.
pub struct FileCheckpoints {
    path: std::path::PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    connector_id: String,
    checkpoint: Checkpoint,
}

impl FileCheckpoints {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        FileCheckpoints { path: path.into() }
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> CdcError {
        CdcError::Checkpoint(format!("{what} {}: {e}", self.path.display()))
    }
}

#[async_trait]
impl CheckpointStore for FileCheckpoints {
    async fn load(&self, connector_id: &str) -> Result<Option<Checkpoint>, CdcError> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("reading", e)),
        };
        let file: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| {
            CdcError::Checkpoint(format!(
                "{} is not a checkpoint file: {e}",
                self.path.display()
            ))
        })?;
        if file.connector_id != connector_id {
            return Err(CdcError::Checkpoint(format!(
                "{} holds the position of connector `{}`, not `{connector_id}`",
                self.path.display(),
                file.connector_id
            )));
        }
        Ok(Some(file.checkpoint))
    }

    async fn save(
        &self,
        connector_id: &str,
        checkpoint: &Checkpoint,
        _recent: &[ChangeEvent],
    ) -> Result<(), CdcError> {
        let body = serde_json::to_vec(&CheckpointFile {
            connector_id: connector_id.to_string(),
            checkpoint: checkpoint.clone(),
        })
        .map_err(|e| CdcError::Checkpoint(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself is durable once the directory is synced.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| CdcError::Checkpoint(e.to_string()))?
        .map_err(|e| self.io_error("writing", e))
    }

    async fn reset(&self, _connector_id: &str) -> Result<(), CdcError> {
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_error("removing", e)),
            _ => Ok(()),
        }
    }
}

/// Checkpoints in Aragora's own database, fenced by the connector's lease: a save succeeds only
/// while `fencing_token` is still the lease's token, so a node that lost its lease (paused, cut
/// off) can never move the position of a connector another node now runs.
pub struct DbCheckpoints {
    pub db: aragora_store::Db,
    pub holder: String,
    pub fencing_token: i64,
}

#[async_trait]
impl CheckpointStore for DbCheckpoints {
    async fn load(&self, connector_id: &str) -> Result<Option<Checkpoint>, CdcError> {
        Ok(
            aragora_store::connectors::load_checkpoint(&self.db, connector_id)
                .await?
                .map(|c| Checkpoint {
                    resume_token: c.resume_token,
                    sequence_number: c.sequence_number,
                    snapshot_done: c.snapshot_done,
                }),
        )
    }

    async fn save(
        &self,
        connector_id: &str,
        checkpoint: &Checkpoint,
        recent: &[ChangeEvent],
    ) -> Result<(), CdcError> {
        let recent: Vec<(i64, String, i64)> = recent
            .iter()
            .map(|e| {
                (
                    e.sequence_number,
                    serde_json::to_string(e).unwrap_or_default(),
                    aragora_core::time::parse_rfc3339(&e.timestamp).unwrap_or(0),
                )
            })
            .collect();
        let saved = aragora_store::connectors::save_checkpoint(
            &self.db,
            &aragora_store::connectors::SaveCheckpoint {
                connector_id,
                holder: &self.holder,
                fencing_token: self.fencing_token,
                resume_token: &checkpoint.resume_token,
                sequence_number: checkpoint.sequence_number,
                snapshot_done: checkpoint.snapshot_done,
                recent: &recent,
                keep_recent: RECENT_EVENTS as i64,
            },
        )
        .await?;
        if saved { Ok(()) } else { Err(CdcError::Fenced) }
    }

    async fn reset(&self, connector_id: &str) -> Result<(), CdcError> {
        aragora_store::connectors::reset_checkpoint(&self.db, connector_id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[tokio::test]
    async fn file_checkpoints_round_trip_and_belong_to_one_connector() {
        let dir = tempfile::tempdir().unwrap();
        // The directory is created on the first save.
        let store = FileCheckpoints::new(dir.path().join("positions").join("c1.json"));
        assert_eq!(store.load("c1").await.unwrap(), None);
        let cp = Checkpoint {
            resume_token: "flavor=mariadb;gtid=0-1-5;file=b.000001;pos=9".into(),
            sequence_number: 42,
            snapshot_done: true,
        };
        store.save("c1", &cp, &[]).await.unwrap();
        assert_eq!(store.load("c1").await.unwrap(), Some(cp.clone()));
        // Another process (a restart) reads the same position.
        let again = FileCheckpoints::new(dir.path().join("positions").join("c1.json"));
        assert_eq!(again.load("c1").await.unwrap(), Some(cp));
        let err = again.load("other").await.unwrap_err().to_string();
        assert!(err.contains("`c1`"), "{err}");
        std::fs::write(dir.path().join("positions").join("c1.json"), b"{torn").unwrap();
        assert!(again.load("c1").await.is_err());
        again.reset("c1").await.unwrap();
        assert_eq!(again.load("c1").await.unwrap(), None);
        again.reset("c1").await.unwrap();
    }
}
