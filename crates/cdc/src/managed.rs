//! Connectors managed by the server (`POST /api/v1/connectors`): one place that knows every
//! source type, so the API, the supervisor and the CLI build connectors the same way.
//!
//! Adding a source: an arm in [`prepare_config`] (validate the JSON config and pin whatever
//! the connector names in the source) and one in [`build`].

use crate::checkpoint::CheckpointStore;
use crate::mongodb::{MongoConfig, MongoConnector};
use crate::mysql::{MySqlConfig, MySqlConnector};
use crate::postgres::{PgMode, PostgresConfig, PostgresConnector};
use crate::snowflake::{SnowflakeConfig, SnowflakeConnector};
use crate::sqlserver::{Credentials as SqlServerCredentials, SqlServerConfig, SqlServerConnector};
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

fn unknown_kind(kind: &str) -> CdcError {
    CdcError::config(
        "type",
        format!(
            "unknown connector type `{kind}`; expected one of {}",
            KINDS.join(", ")
        ),
    )
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
        "mongodb" => {
            let config = MongoConfig::from_json(config)?;
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        "mysql" => {
            let mut config = MySqlConfig::from_json(config)?;
            if !config.use_binlog {
                // Managed, it could only ever refuse to start: `sync()` is a library call.
                return Err(CdcError::config(
                    "config.use_binlog",
                    "must be true for a server-managed connector (it streams the binlog; \
                     `use_binlog: false` is for the Rust API's sync() alone)",
                ));
            }
            // The replica id, pinned so it never changes under a running connector.
            config.server_id = Some(config.server_id_for(id));
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        "snowflake" => {
            let config = SnowflakeConfig::from_json(config)?;
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        "sqlserver" => {
            let config = SqlServerConfig::from_json(config)?;
            serde_json::to_value(&config).map_err(|e| CdcError::config("config", e.to_string()))
        }
        other => Err(unknown_kind(other)),
    }
}

/// Builds the connector described by `spec` (not started, no handlers yet).
pub fn build(spec: Spec<'_>) -> Result<Arc<dyn Connector>, CdcError> {
    match spec.kind {
        "postgresql" => Ok(Arc::new(postgres(spec)?)),
        "mongodb" => {
            let config = MongoConfig::from_json(spec.config)?;
            let conn = MongoConnector::new(spec.id, config, spec.username, spec.password)?;
            Ok(Arc::new(match spec.checkpoints {
                Some(store) => conn.with_checkpoints(store),
                None => conn,
            }))
        }
        "mysql" => Ok(Arc::new(mysql(spec)?)),
        "sqlserver" => Ok(Arc::new(sqlserver(spec)?)),
        "snowflake" => Ok(Arc::new(snowflake(spec)?)),
        other => Err(unknown_kind(other)),
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

/// The MySQL / MariaDB connector of a spec.
pub fn mysql(spec: Spec<'_>) -> Result<MySqlConnector, CdcError> {
    let config = MySqlConfig::from_json(spec.config)?;
    let user = spec.username.ok_or_else(|| {
        CdcError::config(
            "credentials.username",
            "is required for mysql connectors (a user with REPLICATION SLAVE, REPLICATION CLIENT \
             and SELECT on the tables)",
        )
    })?;
    let conn = MySqlConnector::new(spec.id, config, user, spec.password)?;
    Ok(match spec.checkpoints {
        Some(store) => conn.with_checkpoints(store),
        None => conn,
    })
}

/// The SQL Server connector of a spec: SQL authentication with `credentials.username` and the
/// resolved password.
pub fn sqlserver(spec: Spec<'_>) -> Result<SqlServerConnector, CdcError> {
    let config = SqlServerConfig::from_json(spec.config)?;
    let username = spec.username.filter(|u| !u.is_empty()).ok_or_else(|| {
        CdcError::config(
            "credentials.username",
            "a SQL Server login is required (SQL authentication)",
        )
    })?;
    let credentials = SqlServerCredentials {
        username,
        password: spec.password.unwrap_or_default(),
    };
    let conn = SqlServerConnector::new(spec.id, config, credentials)?;
    Ok(match spec.checkpoints {
        Some(store) => conn.with_checkpoints(store),
        None => conn,
    })
}

/// The Snowflake connector of a spec: `credentials.username` is the Snowflake user and the
/// resolved password is the PEM of its private key (key-pair authentication).
pub fn snowflake(spec: Spec<'_>) -> Result<SnowflakeConnector, CdcError> {
    let config = SnowflakeConfig::from_json(spec.config)?;
    let user = spec.username.unwrap_or_default();
    let pem = spec.password.ok_or_else(|| {
        CdcError::config(
            "credentials.password_env",
            "give password_file (or password_env) holding the PEM of the user's private key",
        )
    })?;
    let conn = SnowflakeConnector::new(spec.id, config, &user, &pem)?;
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
    fn a_managed_mysql_connector_streams_the_binlog() {
        let base = json!({"host": "db", "database": "app", "tables": ["users"]});
        let v = prepare_config("mysql", "conn-1", &base).unwrap();
        assert!(v["server_id"].as_u64().unwrap() >= 1000);
        let mut off = base.clone();
        off["use_binlog"] = json!(false);
        let e = prepare_config("mysql", "conn-1", &off).unwrap_err();
        assert!(e.to_string().starts_with("config.use_binlog"), "{e}");
    }

    #[test]
    fn unknown_types_name_the_field() {
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
    fn sqlserver_configs_are_validated_and_built() {
        let v = prepare_config(
            "sqlserver",
            "c",
            &json!({"host": "db", "database": "myapp", "tables": ["users"], "use_cdc": true}),
        )
        .unwrap();
        assert_eq!(v["port"], json!(1433));
        let e = prepare_config("sqlserver", "c", &json!({"host": "db", "database": "x;y"}))
            .unwrap_err();
        assert!(e.to_string().starts_with("config.database"), "{e}");
        let spec = |username: Option<&str>| Spec {
            id: "c",
            kind: "sqlserver",
            config: &v,
            username: username.map(String::from),
            password: Some("pw".into()),
            checkpoints: None,
        };
        let c = build(spec(Some("sa"))).unwrap();
        assert_eq!(c.source_type().as_str(), "sqlserver");
        let e = build(spec(None)).err().unwrap();
        assert!(e.to_string().starts_with("credentials.username"), "{e}");
    }

    #[test]
    fn bad_postgres_config_names_the_field() {
        let e = prepare_config("postgresql", "c", &json!({"host": "db"})).unwrap_err();
        assert!(matches!(e, CdcError::Config { .. }), "{e}");
    }

    #[test]
    fn mysql_config_pins_the_server_id_and_needs_a_user() {
        let v = prepare_config(
            "mysql",
            "conn-1",
            &json!({"host": "db", "database": "app", "tables": ["users"]}),
        )
        .unwrap();
        assert!(v["server_id"].as_u64().unwrap() >= 1000);
        let e = prepare_config("mysql", "c", &json!({"host": "db", "tables": ["t"]})).unwrap_err();
        assert!(e.to_string().starts_with("config.database"), "{e}");
        let spec = |username: Option<String>| Spec {
            id: "c",
            kind: "mysql",
            config: &v,
            username,
            password: None,
            checkpoints: None,
        };
        let e = build(spec(None)).err().unwrap();
        assert!(e.to_string().starts_with("credentials.username"), "{e}");
        assert!(build(spec(Some("cdc".into()))).is_ok());
    }
}
