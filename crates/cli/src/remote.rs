//! Client subcommands: everyday work against a running server.

use anyhow::{Context, Result, bail};
use aragora_client::{BatchOptions, Client, ClientError};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Server URL [env: ARAGORA_API_URL, or ARAGORA_URL] [default: http://127.0.0.1:8080].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API token [env: ARAGORA_API_TOKEN, or ARAGORA_TOKEN] (default: the first-start admin
    /// token in ./aragora-data/admin-token).
    #[arg(long, global = true)]
    pub token: Option<String>,
}

/// The first of these variables that is set and not empty.
fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

impl Remote {
    /// The flag, else the Python SDK's variable, else the older CLI spelling, else the default.
    pub fn base_url(&self) -> String {
        self.url
            .clone()
            .or_else(|| env_any(&["ARAGORA_API_URL", "ARAGORA_URL"]))
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
    }

    fn client(&self) -> Result<Client> {
        let token = match self
            .token
            .clone()
            .or_else(|| env_any(&["ARAGORA_API_TOKEN", "ARAGORA_TOKEN"]))
        {
            Some(t) => t,
            None => std::fs::read_to_string("aragora-data/admin-token")
                .map(|t| t.trim().to_string())
                .context("no token: pass --token or set ARAGORA_API_TOKEN")?,
        };
        Ok(Client::new(&self.base_url(), &token))
    }

    /// Runs a client command, turning transport and auth failures into messages that say what
    /// to check.
    pub async fn run(&self, work: impl Future<Output = Result<()>>) -> Result<()> {
        work.await.map_err(|e| match e.downcast_ref::<ClientError>() {
            Some(ClientError::Transport(_)) => {
                let url = self.base_url();
                e.context(format!(
                    "cannot reach the Aragora server at {url} (is it running? set --url or ARAGORA_API_URL)"
                ))
            }
            Some(ClientError::Api { status: 401, .. }) => e.context(
                "the server rejected the token (pass a valid --token or set ARAGORA_API_TOKEN)",
            ),
            Some(ClientError::Api { status: 403, .. }) => {
                e.context("the token lacks the permission this command needs")
            }
            _ => e,
        })
    }
}

#[derive(Subcommand)]
pub enum Templates {
    /// List templates (optionally filtered).
    List {
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        q: Option<String>,
    },
    /// Publish a template from a JSON file with the guide's body (name, category, template_data, …).
    Publish { file: PathBuf },
    /// Download a template's data to stdout or a file.
    Download {
        id: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum Webhooks {
    /// Register a webhook.
    Register {
        /// The receiver's URL (positional: `--url` is the server's).
        endpoint: String,
        /// Event type to subscribe to (repeatable; `*` for all).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Send a signed test event now and show the receipt.
    Test { id: String },
    /// List delivery receipts.
    Receipts {
        id: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn print(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn templates(remote: &Remote, cmd: Templates) -> Result<()> {
    let c = remote.client()?;
    match cmd {
        Templates::List { category, q } => {
            let mut query = vec![];
            if let Some(cat) = category.as_deref() {
                query.push(("category", cat));
            }
            if let Some(q) = q.as_deref() {
                query.push(("q", q));
            }
            let page = c.marketplace().list(&query).await?;
            for t in &page.items {
                println!(
                    "{}  {:<32} {:<12} v{:<8} ★{:.1} ({})  ↓{}",
                    t.id,
                    t.name,
                    t.category,
                    t.latest_version,
                    t.rating_average,
                    t.rating_count,
                    t.downloads
                );
            }
            eprintln!("{} of {} templates", page.items.len(), page.total);
        }
        Templates::Publish { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            print(&c.marketplace().publish(&body).await?);
        }
        Templates::Download {
            id,
            version,
            output,
        } => {
            let d = c.marketplace().download(&id, version.as_deref()).await?;
            let data = serde_json::to_string_pretty(&d.template_data)?;
            // The data alone goes to stdout (pipeable); what was downloaded goes to stderr.
            match output {
                Some(path) => {
                    std::fs::write(&path, format!("{data}\n"))?;
                    eprintln!(
                        "wrote {id} v{} ({}) to {}",
                        d.version,
                        d.checksum,
                        path.display()
                    );
                }
                None => {
                    println!("{data}");
                    eprintln!("{id} v{} ({})", d.version, d.checksum);
                }
            }
        }
    }
    Ok(())
}

/// File extension of a rendered visual explanation.
fn visual_extension(render: &str) -> &'static str {
    match render {
        "svg" => "svg",
        "mermaid" => "mmd",
        "json" => "json",
        _ => "html",
    }
}

pub async fn explain(
    remote: &Remote,
    debate_id: &str,
    format: &str,
    render: Option<&str>,
    output: Option<PathBuf>,
) -> Result<()> {
    let c = remote.client()?;
    let visual = format == "visual";
    if render.is_some() && !visual {
        bail!("--render only applies to --format visual");
    }
    let render = render.unwrap_or("html");
    let text = if visual && render != "json" {
        if !matches!(render, "html" | "svg" | "mermaid") {
            bail!("--render must be one of html, svg, mermaid, json (not {render:?})");
        }
        c.explainability().visual(debate_id, render).await?
    } else {
        match c.explainability().explanation(debate_id, format).await? {
            Value::String(s) => s,
            v => serde_json::to_string_pretty(&v)?,
        }
    };
    let output = output.or_else(|| {
        visual.then(|| PathBuf::from(format!("{debate_id}.{}", visual_extension(render))))
    });
    match output {
        Some(path) => {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub async fn batch(
    remote: &Remote,
    debate_ids: Vec<String>,
    output: Option<PathBuf>,
) -> Result<()> {
    if debate_ids.is_empty() {
        bail!("give at least one debate id");
    }
    let c = remote.client()?;
    let created = c
        .explainability()
        .create_batch(&debate_ids, BatchOptions::default())
        .await?;
    let batch_id = created.batch_id;
    let bar = indicatif::ProgressBar::new(debate_ids.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(batch_id.clone());
    // Without a terminal the bar draws nothing, so logs get one line per change instead.
    let lines = !std::io::stderr().is_terminal();
    let mut last = (String::new(), u64::MAX);
    let status = loop {
        let s = c.explainability().batch_status(&batch_id).await?;
        let processed = u64::try_from(s.processed).unwrap_or(0);
        bar.set_position(processed);
        if lines && (s.phase != last.0 || processed != last.1) {
            eprintln!(
                "{batch_id}: {} {processed}/{} ({}%)",
                s.phase, s.total, s.progress_percent
            );
            last = (s.phase.clone(), processed);
        }
        if s.is_finished() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    // `status` is `completed` whatever the outcome; the phase says which.
    eprintln!(
        "batch {batch_id}: {} ({}) — {} succeeded, {} failed",
        status.status, status.phase, status.succeeded, status.failed
    );
    if let Some(error) = &status.error {
        eprintln!("batch {batch_id} stopped early: {error}");
    }
    if let Some(path) = output {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = c
                .explainability()
                .batch_results(&batch_id, cursor.as_deref())
                .await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        std::fs::write(&path, serde_json::to_string_pretty(&all)?)?;
        eprintln!("wrote {} results to {}", all.len(), path.display());
    }
    Ok(())
}

pub async fn webhooks(remote: &Remote, cmd: Webhooks) -> Result<()> {
    let c = remote.client()?;
    match cmd {
        Webhooks::Register {
            endpoint,
            events,
            secret,
        } => print(
            &c.webhooks()
                .register(&endpoint, &events, secret.as_deref())
                .await?,
        ),
        Webhooks::Test { id } => {
            let r = c.webhooks().test(&id).await?;
            print(&r);
            if r.status != "succeeded" {
                bail!("test delivery {}", r.status);
            }
        }
        Webhooks::Receipts { id, status, limit } => {
            let page = c.webhooks().receipts(&id, status.as_deref(), limit).await?;
            for r in &page.items {
                println!(
                    "{}  {:<20} attempt {:<2} {:<9} {:>4} {:<8} {}ms",
                    r.created_at,
                    r.event_type,
                    r.attempt,
                    r.status,
                    r.status_code.map_or("-".into(), |c| c.to_string()),
                    r.error_class.as_deref().unwrap_or("-"),
                    r.duration_ms.map_or("-".into(), |d| d.to_string())
                );
            }
        }
    }
    Ok(())
}

pub async fn workers(remote: &Remote) -> Result<()> {
    print(&remote.client()?.workers_status().await?);
    Ok(())
}
