//! The connector's view of MongoDB, behind two small traits so tests can script the paths a
//! server (or the emulator) will not produce on demand: history lost, invalidate, a quiet stream
//! whose post-batch token moves. [`DriverSource`] is the real thing, on the official driver.

use ::mongodb::bson::{Bson, Document, doc};
use ::mongodb::change_stream::ChangeStream;
use ::mongodb::change_stream::event::ResumeToken;
use ::mongodb::options::{
    ChangeStreamOptions, ClientOptions, Credential, FullDocumentBeforeChangeType, FullDocumentType,
};
use ::mongodb::{Client, Cursor};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `fullDocument` of update events (MongoDB's own spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum FullDocument {
    /// Look the current document up when the event is read (the guide's default).
    #[default]
    UpdateLookup,
    /// The stored post-image where the collection has them enabled.
    WhenAvailable,
    /// The stored post-image; the stream fails when one is missing.
    Required,
    /// No document for updates: `data` is the key plus the changed fields.
    Default,
}

/// `fullDocumentBeforeChange`: pre-images become `old_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum PreImages {
    /// Where the collection has `changeStreamPreAndPostImages` enabled; else `old_data` is empty.
    #[default]
    WhenAvailable,
    /// The stream fails on a change without a pre-image.
    Required,
    /// Never ask for pre-images.
    Off,
}

/// What to watch and how.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchPlan {
    pub database: String,
    /// Empty: every collection of the database.
    pub collections: Vec<String>,
    pub full_document: FullDocument,
    pub pre_images: PreImages,
    pub batch_size: u32,
    /// How long one `getMore` waits for changes; bounds how stale the post-batch token of a
    /// quiet stream gets.
    pub max_await: Duration,
}

impl WatchPlan {
    /// The `$match` stage for listed collections: their changes, renames into them, and the
    /// database-level events that end the stream.
    pub fn pipeline(&self) -> Vec<Document> {
        if self.collections.is_empty() {
            return Vec::new();
        }
        let names: Vec<Bson> = self
            .collections
            .iter()
            .map(|c| Bson::String(c.clone()))
            .collect();
        vec![doc! { "$match": { "$or": [
            { "ns.coll": { "$in": names.clone() } },
            { "to.coll": { "$in": names } },
            { "operationType": { "$in": ["dropDatabase", "invalidate"] } },
        ] } }]
    }
}

/// Why the stream stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    /// Error 286 (ChangeStreamHistoryLost) or 280 with a lost resume point: the oplog no longer
    /// holds the position, so changes since the checkpoint cannot be recovered.
    #[error("{0}")]
    HistoryLost(String),
    /// Anything else (network, election, permissions): retried from the last checkpoint.
    #[error("{0}")]
    Failed(String),
}

impl From<::mongodb::error::Error> for StreamError {
    fn from(e: ::mongodb::error::Error) -> Self {
        let code = match e.kind.as_ref() {
            ::mongodb::error::ErrorKind::Command(c) => Some(c.code),
            _ => None,
        };
        let text = e.to_string();
        if code == Some(286)
            || (code == Some(280) && text.contains("resume"))
            || text.contains("ChangeStreamHistoryLost")
        {
            StreamError::HistoryLost(text)
        } else {
            StreamError::Failed(text)
        }
    }
}

/// An open change stream.
#[async_trait]
pub trait ChangeCursor: Send {
    /// The next change, or `None` when a round trip returned an empty batch (caught up). Makes
    /// at most one request to the server.
    async fn next_if_any(&mut self) -> Result<Option<Document>, StreamError>;

    /// The token to resume after what was returned so far — the post-batch token when the last
    /// batch was empty or consumed, so a quiet stream's position still advances.
    fn resume_token(&self) -> Option<Document>;
}

/// A MongoDB deployment as the connector uses it.
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// Opens a change stream; `start_after` resumes after that token (also after an invalidate).
    async fn watch(
        &self,
        plan: &WatchPlan,
        start_after: Option<Document>,
    ) -> Result<Box<dyn ChangeCursor>, StreamError>;

    /// Names of the database's collections (views and `system.*` excluded).
    async fn collections(&self, database: &str) -> Result<Vec<String>, StreamError>;

    /// Every document of a collection in `_id` order, fetched `chunk` documents per round trip.
    async fn scan(
        &self,
        database: &str,
        collection: &str,
        chunk: u32,
    ) -> Result<BoxStream<'static, Result<Document, StreamError>>, StreamError>;

    /// A trivial round trip (`ping`).
    async fn ping(&self) -> Result<(), StreamError>;

    /// What the server says about itself (`hello`: replica set name, last write, …).
    async fn hello(&self) -> Result<Document, StreamError>;
}

/// The real deployment, through the official driver. The client is made on first use (parsing a
/// `mongodb+srv://` URI looks the hosts up in DNS).
pub struct DriverSource {
    uri: String,
    username: Option<String>,
    password: Option<String>,
    auth_source: Option<String>,
    server_selection_timeout: Duration,
    client: tokio::sync::OnceCell<Client>,
}

impl DriverSource {
    pub fn new(
        uri: &str,
        username: Option<String>,
        password: Option<String>,
        auth_source: Option<String>,
        server_selection_timeout: Duration,
    ) -> DriverSource {
        DriverSource {
            uri: uri.to_string(),
            username,
            password,
            auth_source,
            server_selection_timeout,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The driver's client (made on first call).
    pub async fn client(&self) -> Result<&Client, StreamError> {
        self.client
            .get_or_try_init(|| async {
                let mut opts = ClientOptions::parse(&self.uri)
                    .await
                    .map_err(|e| StreamError::Failed(format!("config.uri: {e}")))?;
                if let Some(user) = &self.username {
                    let mut cred = Credential::default();
                    cred.username = Some(user.clone());
                    cred.password = self.password.clone();
                    cred.source = self
                        .auth_source
                        .clone()
                        .or_else(|| opts.credential.as_ref().and_then(|c| c.source.clone()));
                    opts.credential = Some(cred);
                }
                opts.app_name = Some("aragora-cdc".into());
                opts.server_selection_timeout = Some(self.server_selection_timeout);
                opts.connect_timeout = Some(self.server_selection_timeout);
                Client::with_options(opts)
                    .map_err(|e| StreamError::Failed(format!("config.uri: {e}")))
            })
            .await
    }
}

struct DriverCursor(ChangeStream<Document>);

#[async_trait]
impl ChangeCursor for DriverCursor {
    async fn next_if_any(&mut self) -> Result<Option<Document>, StreamError> {
        Ok(self.0.next_if_any().await?)
    }

    fn resume_token(&self) -> Option<Document> {
        self.0.resume_token().and_then(|t| token_to_doc(&t))
    }
}

/// A driver token as a plain document (`{_data: "…"}` on real servers).
pub fn token_to_doc(t: &ResumeToken) -> Option<Document> {
    match ::mongodb::bson::serialize_to_bson(t).ok()? {
        Bson::Document(d) => Some(d),
        _ => None,
    }
}

/// The driver's token type from a stored document.
pub fn doc_to_token(d: Document) -> Result<ResumeToken, StreamError> {
    ::mongodb::bson::deserialize_from_bson(Bson::Document(d))
        .map_err(|e| StreamError::Failed(format!("stored resume token is not usable: {e}")))
}

#[async_trait]
impl ChangeSource for DriverSource {
    async fn watch(
        &self,
        plan: &WatchPlan,
        start_after: Option<Document>,
    ) -> Result<Box<dyn ChangeCursor>, StreamError> {
        let mut opts = ChangeStreamOptions::default();
        opts.full_document = match plan.full_document {
            FullDocument::UpdateLookup => Some(FullDocumentType::UpdateLookup),
            FullDocument::WhenAvailable => Some(FullDocumentType::WhenAvailable),
            FullDocument::Required => Some(FullDocumentType::Required),
            FullDocument::Default => None,
        };
        opts.full_document_before_change = match plan.pre_images {
            PreImages::WhenAvailable => Some(FullDocumentBeforeChangeType::WhenAvailable),
            PreImages::Required => Some(FullDocumentBeforeChangeType::Required),
            PreImages::Off => None,
        };
        opts.batch_size = Some(plan.batch_size);
        opts.max_await_time = Some(plan.max_await);
        if let Some(t) = start_after {
            opts.start_after = Some(doc_to_token(t)?);
        }
        let db = self.client().await?.database(&plan.database);
        let stream = db
            .watch()
            .pipeline(plan.pipeline())
            .with_options(opts)
            .await?
            .with_type::<Document>();
        Ok(Box::new(DriverCursor(stream)))
    }

    async fn collections(&self, database: &str) -> Result<Vec<String>, StreamError> {
        let mut names = self
            .client()
            .await?
            .database(database)
            .list_collection_names()
            .filter(doc! { "type": "collection" })
            .await?;
        names.retain(|n| !n.starts_with("system."));
        names.sort();
        Ok(names)
    }

    async fn scan(
        &self,
        database: &str,
        collection: &str,
        chunk: u32,
    ) -> Result<BoxStream<'static, Result<Document, StreamError>>, StreamError> {
        let cursor: Cursor<Document> = self
            .client()
            .await?
            .database(database)
            .collection::<Document>(collection)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(chunk)
            .await?;
        Ok(cursor.map(|r| r.map_err(StreamError::from)).boxed())
    }

    async fn ping(&self) -> Result<(), StreamError> {
        let admin = self.client().await?.database("admin");
        admin.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn hello(&self) -> Result<Document, StreamError> {
        let admin = self.client().await?.database("admin");
        Ok(admin.run_command(doc! { "hello": 1 }).await?)
    }
}
