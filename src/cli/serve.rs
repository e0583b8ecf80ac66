//! `om serve`: runs the Flight SQL and HTTP listeners over the root until
//! SIGINT or SIGTERM, then stops accepting and lets running requests finish
//! (up to --shutdown-timeout) before exiting 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::Omega;
use crate::server::{Limits, ServeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Flight SQL address, or `off`.
    #[arg(long, default_value = "127.0.0.1:50051")]
    flight: String,
    /// HTTP address, or `off`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Let requests without an API key in, as this role in --bucket. For
    /// local use only: anyone who can reach the port gets the role.
    #[arg(long, value_name = "ROLE")]
    allow_anonymous: Option<String>,
    /// PEM certificate chain: both listeners speak TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Writes, and queries past their first 20 ms, executing at once
    /// (default: 4 × the number of cores). Younger queries need no worker
    /// and lose priority as they age, so short ones never wait.
    #[arg(long)]
    workers: Option<usize>,
    /// Largest HTTP request body, e.g. 512MiB, 2GiB.
    #[arg(long, default_value = "1GiB")]
    max_body: String,
    /// Largest Flight SQL message (ingest batches), e.g. 256MiB.
    #[arg(long, default_value = "256MiB")]
    max_message: String,
    /// Most rows an HTTP JSON or CSV answer returns (Arrow and Parquet stream all).
    #[arg(long)]
    max_result_rows: Option<usize>,
    /// Failed authentications a client (an IPv4 address or an IPv6 /64)
    /// may have per minute; past them its requests get 429 /
    /// RESOURCE_EXHAUSTED for the rest of the minute, unless they carry a
    /// key this server verified before.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_failed_auths: u32,
    /// Memory for tables marked `cache = 'memory'` (decoded batches, least
    /// recently read dropped first), e.g. 4GiB; 0 turns the cache off.
    #[arg(long, default_value = "1GiB")]
    cache_memory: String,
    /// Run queries' scans on this Ballista cluster (df://HOST:PORT; see `om cluster`).
    #[arg(long, env = "OMEGA_CLUSTER")]
    cluster: Option<String>,
    /// Seconds running requests get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
}

fn address(flag: &str, text: &str) -> Result<Option<SocketAddr>, CliError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        CliError::Usage(format!(
            "--{flag} '{text}' is not an address like 127.0.0.1:8080 (or `off`)"
        ))
    })
}

/// `512MiB`, `2GiB`, `100MB`, `4096`: a size in bytes.
pub fn parse_size(flag: &str, text: &str) -> Result<u64, CliError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if factor > 0 && n > 0 => Ok(n.saturating_mul(factor)),
        _ => Err(CliError::Usage(format!(
            "--{flag} '{text}' is not a size like 512MiB, 2GiB or 1000000"
        ))),
    }
}

/// `1.5 GiB`, `512 MiB`, `off` for 0.
fn size_text(bytes: u64) -> String {
    match bytes {
        0 => "off".to_string(),
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b => format!("{} MiB", b >> 20),
    }
}

pub async fn run(om: &Omega, args: ServeArgs) -> Result<(), CliError> {
    let mut limits = Limits {
        body_bytes: parse_size("max-body", &args.max_body)?,
        message_bytes: parse_size("max-message", &args.max_message)?.min(usize::MAX as u64)
            as usize,
        result_rows: args.max_result_rows,
        failed_auths: args.max_failed_auths,
        ..Limits::default()
    };
    if let Some(w) = args.workers {
        if w == 0 {
            return Err(CliError::Usage("--workers must be at least 1".into()));
        }
        limits.workers = w;
    }
    let mut config = ServeConfig {
        flight: address("flight", &args.flight)?,
        http: address("http", &args.http)?,
        allow_anonymous: args.allow_anonymous.clone(),
        tls: args.tls_cert.zip(args.tls_key),
        limits,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        ..ServeConfig::default()
    };
    // background tasks (fits, jobs): one per core unless --workers says
    config.runtime.workers = args.workers.unwrap_or_else(crate::server::cores);
    let cache_bytes = match args.cache_memory.trim() {
        "0" => 0,
        text => parse_size("cache-memory", text)?,
    };
    om.memory_cache().set_budget(cache_bytes);
    let clustered = super::cluster::on_cluster(om, args.cluster.as_deref()).await?;
    let om = &clustered;
    let tls = config.tls.is_some();
    // requests at info; the libraries' own chatter only from warn
    super::init_logs("warn,omegastore=info");
    let running = crate::server::serve(om.clone(), config)
        .await
        .map_err(|e| CliError::Usage(e.message))?;
    let mut listening = Vec::new();
    let scheme = |plain: &str, secure: &str| {
        if tls {
            secure.to_string()
        } else {
            plain.to_string()
        }
    };
    if let Some(a) = running.flight {
        listening.push(format!(
            "Flight SQL on {}://{a}",
            scheme("grpc", "grpc+tls")
        ));
    }
    if let Some(a) = running.http {
        listening.push(format!("HTTP on {}://{a}", scheme("http", "https")));
    }
    let access = match &args.allow_anonymous {
        Some(role) => format!(
            "WARNING: ANONYMOUS ACCESS as role '{role}' in bucket '{}' (--allow-anonymous: for local use only)",
            om.bucket_name()
        ),
        None => "API key required".into(),
    };
    println!(
        "om serve: {}; root {}{}; scheduler on (runtime {}); {}; memory cache {}; query memory {}; {access}",
        listening.join(", "),
        om.root().url(),
        match &args.cluster {
            Some(url) => format!("; queries on cluster {url}"),
            None => String::new(),
        },
        running.runtime,
        if running.query_aging {
            "queries lose priority as they age"
        } else {
            "query aging off (needs CAP_SYS_NICE or `ulimit -e 15`)"
        },
        size_text(cache_bytes),
        match om.memory_limit() {
            Some(limit) => size_text(limit as u64),
            None => "unlimited".to_string(),
        }
    );
    if args.allow_anonymous.is_some() {
        eprintln!("om serve: {access}");
    }
    wait_for_signal().await;
    eprintln!(
        "om serve: stopping; running requests get up to {}s",
        args.shutdown_timeout
    );
    if !running.shutdown().await {
        eprintln!("om serve: some requests did not finish in time; exiting anyway");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_or_explain() {
        assert_eq!(parse_size("x", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("x", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("x", "1000").unwrap(), 1000);
        for bad in ["", "MiB", "0", "12XB", "-1"] {
            assert!(parse_size("x", bad).is_err(), "{bad}");
        }
    }
}
