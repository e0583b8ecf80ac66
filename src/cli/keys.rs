//! `om keys`: API keys for the server. Keys are made by whoever holds the
//! root (its owner); the key is printed once, the store keeps its digest.

use clap::Subcommand;

use super::CliError;
use crate::Omega;
use crate::store::keys::{Keys, parse_lifetime};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for ROLE on BUCKET; prints the key once (store it now).
    Create {
        /// The bucket a session with this key is bound to.
        #[arg(long)]
        bucket: String,
        /// The role it plays there (its privileges come from GRANT).
        #[arg(long)]
        role: String,
        /// A name to recognise it by (default: the role).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: 90d, 12h, 30m (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys (ids, names, identities, expiry; never the secrets).
    List,
    /// Revoke a key by id: it stops working at once.
    Revoke { id: String },
}

pub async fn run(om: &Omega, cmd: KeysCommand) -> Result<(), CliError> {
    let keys = Keys::new(om.root().clone());
    match cmd {
        KeysCommand::Create {
            bucket,
            role,
            name,
            expires,
        } => {
            let lifetime = expires.as_deref().map(parse_lifetime).transpose()?;
            let (key, record) = keys
                .create(&bucket, &role, name.as_deref(), lifetime)
                .await?;
            eprintln!(
                "created key {} for role '{}' on bucket '{}'{}; it is shown only now:",
                record.id,
                record.role,
                record.bucket,
                record
                    .expires
                    .map(|e| format!(", expires {}", e.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{key}");
        }
        KeysCommand::List => {
            let now = chrono::Utc::now();
            println!("id\tname\tbucket\trole\tcreated\texpires\tstate");
            for r in keys.list().await? {
                let state = if r.revoked.is_some() {
                    "revoked"
                } else if !r.is_live(now) {
                    "expired"
                } else {
                    "live"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{state}",
                    r.id,
                    r.name,
                    r.bucket,
                    r.role,
                    r.created.to_rfc3339(),
                    r.expires.map(|e| e.to_rfc3339()).unwrap_or("-".into()),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let r = keys.revoke(&id).await?;
            eprintln!(
                "revoked key {} ({}, role '{}' on '{}')",
                r.id, r.name, r.role, r.bucket
            );
        }
    }
    Ok(())
}
