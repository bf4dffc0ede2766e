//! `aragora`: the server, its workers, migrations and tokens in one binary.

mod cdc;
mod cdc_run;
mod config;
mod remote;
mod serve;

use anyhow::{Context, Result};
use aragora_core::auth::{Permission, Role};
use aragora_store::tokens::{self, NewToken};
use aragora_store::{Db, migrate};
use clap::{Parser, Subcommand};
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
    /// Revoke a token by id or name.
    Revoke { id: String },
}

fn main() -> Result<()> {
    config::apply_config_file()?;
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
    config::init_logging(&common.log_format);
    let url = common.database_url()?;
    Db::connect(&url, &Default::default())
        .await
        .with_context(|| format!("cannot open database {}", config::redact(&url)))
}

async fn run_migrate(common: Common, status: bool) -> Result<()> {
    let db = open(&common).await?;
    if status {
        for m in migrate::status(&db).await? {
            println!(
                "{:<8} {}",
                if m.applied { "applied" } else { "pending" },
                m.name
            );
        }
        return Ok(());
    }
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

async fn run_token(common: Common, action: TokenAction) -> Result<()> {
    let db = open(&common).await?;
    migrate::run(&db).await?;
    match action {
        TokenAction::Create {
            name,
            workspace,
            role,
            permissions,
            user,
        } => {
            let role = role
                .map(|r| r.parse::<Role>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let permissions = permissions
                .iter()
                .map(|p| p.parse::<Permission>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let (info, token) = tokens::create(
                &db,
                &NewToken {
                    name,
                    workspace,
                    user,
                    role,
                    permissions,
                },
            )
            .await?;
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
        TokenAction::Revoke { id } => {
            if tokens::revoke(&db, &id).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no live token with id or name `{id}`");
            }
        }
    }
    Ok(())
}
