//! Connectors managed by the server (`POST /api/v1/connectors`): one place that knows every
//! source type, so the API, the supervisor and the CLI build connectors the same way.
//!
//! Adding a source: an arm in [`prepare_config`] (validate the JSON config and pin whatever
//! the connector names in the source) and one in [`build`].

use crate::checkpoint::CheckpointStore;
#[cfg(feature = "mongodb")]
use crate::mongodb::{MongoConfig, MongoConnector};
use crate::postgres::{PgMode, PostgresConfig, PostgresConnector};
use crate::{CdcError, Connector};
use serde_json::Value;
use std::sync::Arc;

/// Every source type the API accepts as `type`.
pub const KINDS: [&str; 5] = ["postgresql", "mysql", "mongodb", "sqlserver", "snowflake"];

/// What the supervisor needs to build a connector.
pub struct Spec<'a> {
    pub id: &'a str,
    /// `type` of the connector (one of [`KINDS`]).
    pub kind: &'a str,
    /// The config as stored by [`prepare_config`].
    pub config: &'a Value,
    /// `credentials.username`, if given.
    pub username: Option<String>,
    /// The resolved password, if any.
    pub password: Option<String>,
    /// Where resume tokens go (`None`: in memory, e.g. for a health probe).
    pub checkpoints: Option<Arc<dyn CheckpointStore>>,
}

fn unavailable(kind: &str) -> CdcError {
    if KINDS.contains(&kind) {
        CdcError::config(
            "type",
            format!("`{kind}` connectors are not available in this build"),
        )
    } else {
        CdcError::config(
            "type",
            format!(
                "unknown connector type `{kind}`; expected one of {}",
                KINDS.join(", ")
            ),
        )
    }
}

/// Validates a connector's config for `kind` and returns it as it is stored: normalised, with
/// the names the connector will create in the source pinned to connector `id`, so they stay
/// findable when the connector is deleted. Errors name the field (`config.tables[1]`).
pub fn prepare_config(kind: &str, id: &str, config: &Value) -> Result<Value, CdcError> {
    match kind {
        "postgresql" => {
            let mut config = PostgresConfig::from_json(config)?;
            config.slot_name = Some(config.slot_for(id));
            if config.mode == PgMode::Logical {
                config.publication = Some(config.publication_for(id));
            }
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        #[cfg(feature = "mongodb")]
        "mongodb" => {
            let config = MongoConfig::from_json(config)?;
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        other => Err(unavailable(other)),
    }
}

/// Builds the connector described by `spec` (not started, no handlers yet).
pub fn build(spec: Spec<'_>) -> Result<Arc<dyn Connector>, CdcError> {
    match spec.kind {
        "postgresql" => Ok(Arc::new(postgres(spec)?)),
        #[cfg(feature = "mongodb")]
        "mongodb" => {
            let config = MongoConfig::from_json(spec.config)?;
            let conn = MongoConnector::new(spec.id, config, spec.username, spec.password)?;
            Ok(Arc::new(match spec.checkpoints {
                Some(store) => conn.with_checkpoints(store),
                None => conn,
            }))
        }
        other => Err(unavailable(other)),
    }
}

/// The PostgreSQL connector of a spec (the CLI's `aragora cdc install` needs its concrete type).
pub fn postgres(spec: Spec<'_>) -> Result<PostgresConnector, CdcError> {
    if spec.kind != "postgresql" {
        return Err(CdcError::config(
            "type",
            format!("expected a postgresql connector, not `{}`", spec.kind),
        ));
    }
    let config = PostgresConfig::from_json(spec.config)?;
    let user = spec.username.unwrap_or_else(|| "postgres".into());
    let conn = PostgresConnector::new(spec.id, config, user, spec.password)?;
    Ok(match spec.checkpoints {
        Some(store) => conn.with_checkpoints(store),
        None => conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn postgres_config_pins_slot_and_publication() {
        let v = prepare_config(
            "postgresql",
            "conn-1",
            &json!({"host": "db", "database": "app", "tables": ["users"], "mode": "logical"}),
        )
        .unwrap();
        assert!(v["slot_name"].as_str().unwrap().contains("conn"));
        assert!(v["publication"].is_string());
    }

    #[test]
    fn unknown_and_unavailable_types_name_the_field() {
        let e = prepare_config("oracle", "c", &json!({})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("type: unknown connector type `oracle`")
        );
        let e = build(Spec {
            id: "c",
            kind: "oracle",
            config: &json!({}),
            username: None,
            password: None,
            checkpoints: None,
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("type"));
    }

    #[cfg(feature = "mongodb")]
    #[test]
    fn mongodb_is_available_and_its_config_validated() {
        let v = prepare_config(
            "mongodb",
            "conn-1",
            &json!({"uri": "mongodb://db/?replicaSet=rs0", "database": "app"}),
        )
        .unwrap();
        assert_eq!(v["full_document"], json!("updateLookup"));
        assert_eq!(v["collections"], json!([]));
        let e = prepare_config("mongodb", "c", &json!({"uri": "mongodb://db"})).unwrap_err();
        assert!(e.to_string().starts_with("config.database"), "{e}");
        let conn = build(Spec {
            id: "c",
            kind: "mongodb",
            config: &v,
            username: Some("cdc".into()),
            password: Some("pw".into()),
            checkpoints: None,
        })
        .unwrap();
        assert_eq!(conn.source_type().as_str(), "mongodb");
    }

    #[test]
    fn bad_postgres_config_names_the_field() {
        let e = prepare_config("postgresql", "c", &json!({"host": "db"})).unwrap_err();
        assert!(matches!(e, CdcError::Config { .. }), "{e}");
    }
}
