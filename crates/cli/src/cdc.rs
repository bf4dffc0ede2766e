//! `aragora cdc install|uninstall`: set CDC capture up in a source database (or print the SQL for
//! a DBA), for a registered connector or from flags; `aragora cdc run` (in `cdc_run`): one
//! connector for a client library.

use crate::config::Common;
use anyhow::{Context, Result, bail};
use aragora_cdc::Connector;
use aragora_cdc::postgres::{PgMode, PostgresConfig, PostgresConnector};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum CdcAction {
    /// Create the changelog table and triggers (trigger mode) or the publication and replica
    /// identity (logical mode). Idempotent.
    Install(Target),
    /// Remove what install (and the connector) created: triggers and changelog, or slot and
    /// publication.
    Uninstall(Target),
    /// Run one connector for a client library over stdin/stdout (the Python SDK's in-process
    /// connectors): a JSON spec line in, events out, acknowledgements in. docs/cdc/python.md.
    Run,
}

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    common: Common,
    /// A registered connector (conn-…): its settings, with the password from its password_env
    /// or password_file. Uses --database-url / DATABASE_URL to find it.
    #[arg(long, conflicts_with_all = ["host", "database", "tables"])]
    connector: Option<String>,
    /// Source host.
    #[arg(long, env = "PGHOST")]
    host: Option<String>,
    #[arg(long, env = "PGPORT", default_value_t = 5432)]
    port: u16,
    /// Source database.
    #[arg(long, env = "PGDATABASE")]
    database: Option<String>,
    #[arg(long, env = "PGUSER", default_value = "postgres")]
    user: String,
    /// Environment variable holding the password (default: PGPASSWORD).
    #[arg(long, default_value = "PGPASSWORD")]
    password_env: String,
    /// Tables, comma-separated (`table` or `schema.table`).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    #[arg(long, default_value = "public")]
    schema: String,
    /// trigger or logical.
    #[arg(long, default_value = "trigger")]
    mode: String,
    /// Changelog/slot name (what the connector's `slot_name` will be).
    #[arg(long)]
    slot: Option<String>,
    /// Print the SQL instead of running it.
    #[arg(long)]
    print_sql: bool,
}

async fn connector(t: &Target) -> Result<PostgresConnector> {
    if let Some(id) = &t.connector {
        let db = crate::open(&t.common).await?;
        aragora_store::migrate::run(&db).await?;
        let record = aragora_store::connectors::get_any(&db, id)
            .await?
            .with_context(|| format!("no connector {id}"))?;
        let spec = aragora_server::cdc::spec(&db, &record, None).map_err(anyhow::Error::msg)?;
        return aragora_cdc::managed::postgres(spec).map_err(anyhow::Error::msg);
    }
    let (Some(host), Some(database)) = (&t.host, &t.database) else {
        bail!("give --connector, or --host, --database and --tables");
    };
    if t.tables.is_empty() {
        bail!("give --tables");
    }
    let mut cfg = PostgresConfig::new(host.clone(), database.clone(), t.tables.clone());
    cfg.port = t.port;
    cfg.schema = t.schema.clone();
    cfg.mode = match t.mode.as_str() {
        "trigger" => PgMode::Trigger,
        "logical" => PgMode::Logical,
        other => bail!("--mode: expected trigger or logical, not {other}"),
    };
    cfg.slot_name = t.slot.clone();
    if cfg.slot_name.is_none() {
        bail!("give --slot (the connector's slot_name), so the connector finds what is installed");
    }
    let password = std::env::var(&t.password_env).ok();
    PostgresConnector::new("cli", cfg, t.user.clone(), password).map_err(anyhow::Error::msg)
}

pub async fn run(action: CdcAction) -> Result<()> {
    match action {
        CdcAction::Run => crate::cdc_run::run().await?,
        CdcAction::Install(t) => {
            crate::config::init_logging(t.common.log_format);
            let c = connector(&t).await?;
            if t.print_sql {
                print!("{}", c.install_sql().await?);
            } else {
                let sql = c.install().await?;
                if sql.is_empty() {
                    println!("capture already installed");
                } else {
                    println!("installed capture:\n{sql}");
                }
            }
        }
        CdcAction::Uninstall(t) => {
            crate::config::init_logging(t.common.log_format);
            let c = connector(&t).await?;
            if t.print_sql {
                print!("{}", c.uninstall_sql());
            } else {
                c.teardown().await?;
                println!("capture removed");
            }
        }
    }
    Ok(())
}
