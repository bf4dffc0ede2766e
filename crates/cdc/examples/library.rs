//! The guide's library use, from Rust: construct a connector, add a `CallbackHandler`, start
//! capture, `sync()`, stop, close.
//!
//! ```sh
//! PGHOST=127.0.0.1 PGPORT=5432 PGDATABASE=myapp PGUSER=cdc_user PGPASSWORD=secret \
//!   cargo run -p aragora-cdc --example library -- users orders
//! ```
//! With `CDC_MODE=logical` it uses logical replication instead of triggers. It prints each row of
//! the tables, then every change for `CDC_SECONDS` (default 10) seconds.

use aragora_cdc::postgres::{PgMode, PostgresConfig, PostgresConnector};
use aragora_cdc::{CallbackHandler, Connector, HandlerError};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let tables: Vec<String> = std::env::args().skip(1).collect();
    if tables.is_empty() {
        eprintln!(
            "usage: library TABLE [TABLE…]  (connection from PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD)"
        );
        std::process::exit(2);
    }
    let mut config = PostgresConfig::new(
        env("PGHOST", "127.0.0.1"),
        env("PGDATABASE", "postgres"),
        tables,
    );
    config.port = env("PGPORT", "5432").parse()?;
    config.slot_name = Some("aragora_example".into());
    if env("CDC_MODE", "trigger") == "logical" {
        config.mode = PgMode::Logical;
    }
    let connector = PostgresConnector::new(
        "example",
        config,
        env("PGUSER", "postgres"),
        std::env::var("PGPASSWORD").ok(),
    )?;

    // Add change event handler
    connector.add_change_handler(Arc::new(CallbackHandler::new(|event| async move {
        println!("Change: {:?} on {}", event.operation, event.table);
        println!("Data: {}", serde_json::Value::Object(event.data));
        Ok::<(), HandlerError>(())
    })));

    // Start CDC
    connector.start().await?;

    // Perform incremental sync
    let mut rows = connector.sync();
    while let Some(row) = rows.next().await {
        println!("Synced: {}", row?.evidence_id);
    }
    drop(rows);

    let seconds: u64 = env("CDC_SECONDS", "10").parse()?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&connector.health_check().await)?
    );

    // Stop CDC
    connector.stop().await?;
    connector.close().await?;
    if env("CDC_TEARDOWN", "1") == "1" {
        connector.teardown().await?;
    }
    Ok(())
}
