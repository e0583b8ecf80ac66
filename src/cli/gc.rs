//! `om gc`: garbage collection of every store of every bucket under the
//! root, and the duration syntax its options (and `om datasets vacuum`) take.

use clap::Args;

use super::CliError;
use crate::Omega;
use crate::store::{GcOptions, GcReport, list_buckets};

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Remove only unreferenced files older than this (s, m, h, d; `0` for all).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub older_than: std::time::Duration,
    /// List what would be removed and its size; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `90s`, `30m`, `1h`, `7d`, or `0`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{s}' needs a unit: s, m, h or d (e.g. 1h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit '{unit}' in '{s}': use s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// Prints a report, one line per file, then the total.
pub fn print_report(report: &GcReport, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    for (path, size) in &report.files {
        println!("{verb} {path} ({size} bytes)");
    }
    println!(
        "{verb} {} files, {} bytes",
        report.files.len(),
        report.bytes
    );
}

pub async fn run(om: &Omega, args: GcArgs) -> Result<(), CliError> {
    let opts = GcOptions {
        older_than: args.older_than,
        dry_run: args.dry_run,
    };
    let root = om.root();
    let mut total = GcReport::default();
    for bucket in list_buckets(root).await? {
        let b = om.bucket(&bucket)?;
        for prefix in crate::store::bucket::list_stores(root, &bucket).await? {
            let r = b.store(&prefix)?.gc(&opts).await?;
            total.files.extend(r.files);
            total.bytes += r.bytes;
        }
    }
    print_report(&total, args.dry_run);
    Ok(())
}
