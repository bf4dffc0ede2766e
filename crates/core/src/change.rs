//! `ChangeEvent`: the one shape every CDC connector emits (the guide's "CDC Event Model").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CdcSourceType {
    Postgresql,
    Mongodb,
    Mysql,
    Sqlserver,
    Snowflake,
}

impl CdcSourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            CdcSourceType::Postgresql => "postgresql",
            CdcSourceType::Mongodb => "mongodb",
            CdcSourceType::Mysql => "mysql",
            CdcSourceType::Sqlserver => "sqlserver",
            CdcSourceType::Snowflake => "snowflake",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeOperation {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeEvent {
    /// Derived from the source position, so a replay yields the same id.
    pub id: String,
    pub source_type: CdcSourceType,
    pub connector_id: String,
    pub operation: ChangeOperation,
    /// RFC 3339 UTC: the source's commit time where known, else capture time.
    pub timestamp: String,
    pub database: String,
    pub table: String,
    /// New row (INSERT/UPDATE); empty for DELETE.
    pub data: Map<String, Value>,
    /// Old row (UPDATE/DELETE) where the source provides it; empty otherwise.
    pub old_data: Map<String, Value>,
    pub primary_key: Map<String, Value>,
    /// Opaque position to resume after this event.
    pub resume_token: String,
    /// Monotonic per connector.
    pub sequence_number: i64,
}
