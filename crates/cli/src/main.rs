//! `aragora`: the server, its workers, migrations and tokens in one binary.

mod cdc;
mod cdc_run;
mod config;
mod remote;
mod serve;

use anyhow::{Context, Result};
use aragora_store::tokens::{self, NewToken};
use aragora_store::{Db, migrate};
use clap::{CommandFactory, Parser, Subcommand};
use config::{Common, ServeArgs};

/// mimalloc instead of the system allocator: CDC decoding and JSON rendering allocate per row and
/// per field, and glibc malloc/free was a third of the MySQL connector's CPU (see docs/cdc/mysql.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aragora",
    version,
    about = "Multi-agent debates, template marketplace, explainability, webhooks and CDC — one binary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and every background worker (the unified server).
    Serve(ServeArgs),
    /// Run background workers only (scale-out on PostgreSQL).
    Worker(ServeArgs),
    /// Apply pending database migrations, or list them with --status.
    Migrate {
        #[command(flatten)]
        common: Common,
        /// List applied and pending migrations instead of applying them.
        #[arg(long)]
        status: bool,
    },
    /// Marketplace templates on a running server: list, publish, download.
    Templates {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        action: remote::Templates,
    },
    /// Explain a debate: json, summary, detailed, or visual (written to `<debate_id>.html` unless
    /// --output says otherwise).
    Explain {
        #[command(flatten)]
        remote: remote::Remote,
        debate_id: String,
        #[arg(long, default_value = "summary")]
        format: String,
        /// With --format visual: html (a standalone page, the default), svg, mermaid or json.
        #[arg(long)]
        render: Option<String>,
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Explain many debates as a batch job, with a progress bar until it is done.
    Batch {
        #[command(flatten)]
        remote: remote::Remote,
        debate_ids: Vec<String>,
        /// Write every result to this JSON file.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Webhooks on a running server: register, test, receipts.
    Webhooks {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        action: remote::Webhooks,
    },
    /// Worker and queue status of a running server.
    Workers {
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Print the OpenAPI document (the same as GET /openapi.json).
    Openapi,
    /// Set CDC capture up in a source database (or remove it), or run one connector for a
    /// client library.
    Cdc {
        #[command(subcommand)]
        action: cdc::CdcAction,
    },
    /// Manage API tokens.
    Token {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it once.
    Create {
        /// A label for the token.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// viewer, member or admin.
        #[arg(long)]
        role: Option<String>,
        /// Extra permissions, e.g. --permission webhooks:read (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// The user the token acts for (default: the name).
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Revoke a token by id, or by name when exactly one live token has it.
    Revoke { id: String },
}

fn main() -> Result<()> {
    config::apply_config_file(&Cli::command())?;
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args, true, true).await,
            Command::Worker(args) => serve::run(args, false, true).await,
            Command::Migrate { common, status } => run_migrate(common, status).await,
            Command::Token { common, action } => run_token(common, action).await,
            Command::Templates { remote, action } => {
                remote.run(remote::templates(&remote, action)).await
            }
            Command::Explain {
                remote,
                debate_id,
                format,
                render,
                output,
            } => {
                remote
                    .run(remote::explain(
                        &remote,
                        &debate_id,
                        &format,
                        render.as_deref(),
                        output,
                    ))
                    .await
            }
            Command::Batch {
                remote,
                debate_ids,
                output,
            } => remote.run(remote::batch(&remote, debate_ids, output)).await,
            Command::Webhooks { remote, action } => {
                remote.run(remote::webhooks(&remote, action)).await
            }
            Command::Workers { remote } => remote.run(remote::workers(&remote)).await,
            Command::Openapi => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&aragora_server::openapi())?
                );
                Ok(())
            }
            Command::Cdc { action } => cdc::run(action).await,
        }
    })
}

async fn open(common: &Common) -> Result<Db> {
    config::init_logging(common.log_format);
    let url = common.database_url()?;
    Db::connect(&url, &Default::default())
        .await
        .with_context(|| format!("cannot open database {}", config::redact(&url)))
}

async fn run_migrate(common: Common, status: bool) -> Result<()> {
    if status {
        return migrate_status(&common).await;
    }
    let db = open(&common).await?;
    let before = migrate::status(&db)
        .await?
        .iter()
        .filter(|m| !m.applied)
        .count();
    migrate::run(&db).await?;
    println!(
        "applied {before} migration(s); database is current ({})",
        db.dialect().as_str()
    );
    Ok(())
}

/// `migrate --status`: read-only. A SQLite database that does not exist is reported (every
/// migration pending, exit 0) without creating the data folder or the file. A migration that was
/// applied but differs from this binary's copy is listed as `modified` and fails the command, as
/// `aragora migrate` would.
async fn migrate_status(common: &Common) -> Result<()> {
    config::init_logging(common.log_format);
    let url = common.database_url_no_create();
    let list = match config::sqlite_file(&url) {
        Some(file) if !file.exists() => {
            eprintln!(
                "no database at {}: every migration is pending (nothing was created)",
                file.display()
            );
            migrate::known(aragora_store::Dialect::Sqlite)
        }
        _ => {
            let db = Db::connect(&url, &Default::default())
                .await
                .with_context(|| format!("cannot open database {}", config::redact(&url)))?;
            let list = migrate::status(&db).await?;
            db.close().await;
            list
        }
    };
    let mut modified = 0;
    for m in &list {
        let state = if m.modified {
            modified += 1;
            "modified"
        } else if m.applied {
            "applied"
        } else {
            "pending"
        };
        println!("{state:<8} {}", m.name);
    }
    if modified > 0 {
        anyhow::bail!(
            "{modified} applied migration(s) differ from this binary's copy (previously applied \
             but has been modified): `aragora migrate` refuses this database"
        );
    }
    Ok(())
}

/// Checks `token create`'s options with the same function as `POST /api/v1/tokens`, naming the
/// option in the error.
fn new_token(
    name: String,
    workspace: String,
    role: Option<String>,
    permissions: Vec<String>,
    user: Option<String>,
) -> Result<NewToken> {
    let body = serde_json::json!({
        "name": name,
        "workspace": workspace,
        "role": role,
        "permissions": permissions,
        "user": user,
    });
    let body = serde_json::from_value(body).context("token options")?;
    aragora_server::routes::tokens::parse_new_token(body).map_err(|e| {
        let field = e.details["field"].as_str().unwrap_or_default();
        let option = match field.split('[').next().unwrap_or_default() {
            "permissions" => "--permission".to_string(),
            "" => return anyhow::anyhow!("{}", e.message),
            f => format!("--{f}"),
        };
        let reason = e
            .message
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&e.message);
        anyhow::anyhow!("{option}: {reason}")
    })
}

async fn run_token(common: Common, action: TokenAction) -> Result<()> {
    // Options are checked before the database is opened (or created).
    let new = match &action {
        TokenAction::Create {
            name,
            workspace,
            role,
            permissions,
            user,
        } => Some(new_token(
            name.clone(),
            workspace.clone(),
            role.clone(),
            permissions.clone(),
            user.clone(),
        )?),
        TokenAction::Revoke { id } if id.trim().is_empty() => {
            anyhow::bail!("token revoke: give a token id (tok-…) or name, not an empty string")
        }
        _ => None,
    };
    let db = open(&common).await?;
    migrate::run(&db).await?;
    match action {
        TokenAction::Create { .. } => {
            let new = new.expect("checked above");
            let (info, token) = tokens::create(&db, &new).await?;
            eprintln!(
                "created {} in workspace {} with: {}",
                info.id,
                info.workspace,
                info.permissions.join(", ")
            );
            println!("{token}");
        }
        TokenAction::List { workspace } => {
            for t in tokens::list(&db, workspace.as_deref()).await? {
                println!(
                    "{}  {:<20} {:<12} {:<16} {}{}",
                    t.id,
                    t.name,
                    t.workspace,
                    t.token_prefix,
                    t.permissions.join(","),
                    if t.revoked_at.is_some() {
                        "  (revoked)"
                    } else {
                        ""
                    }
                );
            }
        }
        TokenAction::Revoke { id } => revoke(&db, &id).await?,
    }
    Ok(())
}

/// Revokes the token with id `arg`, else the one live token named `arg`; several live tokens with
/// that name are listed and nothing is revoked.
async fn revoke(db: &Db, arg: &str) -> Result<()> {
    let all = tokens::list(db, None).await?;
    let target = match all.iter().find(|t| t.id == arg) {
        Some(t) if t.revoked_at.is_some() => anyhow::bail!("token {arg} is already revoked"),
        Some(t) => t,
        None => {
            let named: Vec<_> = all
                .iter()
                .filter(|t| t.name == arg && t.revoked_at.is_none())
                .collect();
            match named.as_slice() {
                [] => anyhow::bail!("no live token with id or name `{arg}`"),
                [t] => *t,
                several => {
                    let mut msg = format!(
                        "{} live tokens are named `{arg}`; nothing was revoked. Revoke one by id:",
                        several.len()
                    );
                    for t in several {
                        msg.push_str(&format!(
                            "\n  {}  workspace {}  {}",
                            t.id, t.workspace, t.token_prefix
                        ));
                    }
                    anyhow::bail!(msg)
                }
            }
        }
    };
    if !tokens::revoke_id(db, &target.id).await? {
        anyhow::bail!("token {} was revoked meanwhile", target.id);
    }
    if target.id == arg {
        println!("revoked {}", target.id);
    } else {
        println!("revoked {} ({arg})", target.id);
    }
    Ok(())
}
