//! `om bench tpch` and `om bench ops`: see [`crate::bench`].

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, progress};
use crate::Omega;
use crate::bench::{self, Timing, ops, tpch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Timed runs per operation (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// table for people, json for programs.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// TPC-H: generate the tables (no download), store them, run the 22 queries.
    Tpch {
        /// Scale factor (1 = 6 million lineitem rows).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Only these queries, e.g. --queries 1,6,14.
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Write each query's result as CSV into this directory.
        #[arg(long)]
        answers: Option<PathBuf>,
        /// Write each table as Parquet into this directory (for other engines).
        #[arg(long)]
        export: Option<PathBuf>,
        /// Generate the tables again even if the store has them.
        #[arg(long)]
        regenerate: bool,
        /// Run the queries on this Ballista cluster (df://HOST:PORT; see `om cluster`).
        #[arg(long, env = "OMEGA_CLUSTER")]
        cluster: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// `om serve` under load on loopback (a fresh temporary root): SELECT 1
    /// round trips, concurrent clients mixing lookups, aggregates and appends,
    /// and a large result streamed through Flight SQL.
    Serve {
        /// Concurrent clients (each a Flight SQL and an HTTP connection).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds the clients run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Rows of the table looked up and aggregated.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Rows of the result streamed through Flight SQL.
        #[arg(long, default_value_t = 10_000_000)]
        stream_rows: u64,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Open a store holding many objects and list them.
    Catalog {
        /// Objects in the store (created once, in the bucket bench_catalog).
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        #[command(flatten)]
        common: Common,
    },
    /// The store's own work on a generated table: puts, get, queries, models.
    Ops {
        /// Rows of the generated table.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Where the generated CSV and Parquet files go (kept for peers).
        #[arg(long, default_value = "bench-data")]
        data: PathBuf,
        /// Rows the linear and logistic models are fitted on.
        #[arg(long, default_value_t = 1_000_000)]
        model_rows: usize,
        /// Rows the random forest is fitted on.
        #[arg(long, default_value_t = 100_000)]
        forest_rows: usize,
        /// Trees of the random forest.
        #[arg(long, default_value_t = 20)]
        trees: usize,
        #[command(flatten)]
        common: Common,
    },
}

fn report(title: &str, timings: &[Timing], format: ReportFormat) -> Result<(), CliError> {
    match format {
        ReportFormat::Table => print!("{}", bench::table(title, timings)),
        ReportFormat::Json => {
            let v = serde_json::json!({
                "benchmark": title,
                "peak_rss_bytes": ops::peak_rss(),
                "omegastore_version": env!("CARGO_PKG_VERSION"),
                "debug_build": cfg!(debug_assertions),
                "timings": timings,
            });
            println!("{v}");
        }
    }
    Ok(())
}

pub async fn run(om: &Omega, cmd: BenchCommand) -> Result<(), CliError> {
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build; build with --release for meaningful timings");
    }
    let pb = progress::bar(None, "bench");
    let say = |m: &str| pb.set_message(m.to_string());
    match cmd {
        BenchCommand::Tpch {
            sf,
            queries,
            answers,
            export,
            regenerate,
            cluster,
            common,
        } => {
            if !(sf > 0.0 && sf <= 1000.0) {
                return Err(CliError::Usage(format!(
                    "--sf {sf}: use a scale factor between 0 and 1000"
                )));
            }
            if let Some(q) = queries.iter().find(|q| **q == 0 || **q > 22) {
                return Err(CliError::Usage(format!(
                    "--queries: {q} is not a TPC-H query (1-22)"
                )));
            }
            let om = super::cluster::on_cluster(om, cluster.as_deref())
                .await?
                .bucket(&tpch::bucket(sf))?;
            let opts = tpch::TpchOptions {
                scale_factor: sf,
                runs: common.runs,
                queries,
                answers,
                export,
                regenerate,
            };
            let mut timings = tpch::load(&om, &opts, &say).await?;
            timings.extend(tpch::run(&om, &opts, &say).await?);
            pb.finish_and_clear();
            let title = match &cluster {
                Some(url) => format!("TPC-H sf {sf} on cluster {url}"),
                None => format!("TPC-H sf {sf}"),
            };
            report(&title, &timings, common.format)?;
            print_peak_memory(common.format);
        }
        BenchCommand::Serve {
            clients,
            seconds,
            rows,
            stream_rows,
            format,
        } => {
            if !(1..=1024).contains(&clients) || !(1..=3600).contains(&seconds) || rows == 0 {
                return Err(CliError::Usage(
                    "--clients 1..1024, --seconds 1..3600 and --rows > 0".into(),
                ));
            }
            // the server's warnings, and its request logs with OMEGA_LOG
            super::init_logs("warn");
            let bench = crate::bench::serve::ServeBench {
                clients,
                duration: std::time::Duration::from_secs(seconds),
                rows,
                stream_rows,
            };
            let report = crate::bench::serve::run(bench, &say)
                .await
                .map_err(|e| CliError::Usage(format!("the load test failed: {e}")))?;
            pb.finish_and_clear();
            print_serve(&report, format)?;
        }
        BenchCommand::Catalog { objects, common } => {
            let timings = bench::catalog::run(om, objects, common.runs, &say).await?;
            pb.finish_and_clear();
            report(
                &format!("open and list {objects} objects"),
                &timings,
                common.format,
            )?;
        }
        BenchCommand::Ops {
            rows,
            data,
            model_rows,
            forest_rows,
            trees,
            common,
        } => {
            if rows < 10_000 {
                return Err(CliError::Usage("--rows: use at least 10000".into()));
            }
            let om = om.bucket("bench_ops")?;
            let opts = ops::OpsOptions {
                rows,
                runs: common.runs,
                data,
                model_rows: model_rows.min(rows),
                forest_rows: forest_rows.min(rows),
                trees,
            };
            let timings = ops::run(&om, &opts, &say).await?;
            pb.finish_and_clear();
            report(&format!("ops on {rows} rows"), &timings, common.format)?;
            print_peak_memory(common.format);
        }
    }
    Ok(())
}

/// The process's peak resident memory under a table report (the JSON
/// report carries it as `peak_rss_bytes`).
fn print_peak_memory(format: ReportFormat) {
    if format == ReportFormat::Table
        && let Some(peak) = ops::peak_rss()
    {
        println!("peak memory: {:.2} GiB", peak as f64 / (1u64 << 30) as f64);
    }
}

fn print_serve(r: &crate::bench::serve::ServeReport, format: ReportFormat) -> Result<(), CliError> {
    if matches!(format, ReportFormat::Json) {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return Ok(());
    }
    println!(
        "Flight SQL SELECT 1 round trip: p50 {:.3} ms (GetFlightInfo {:.3} ms), p99 {:.3} ms",
        r.select1_p50_ms, r.select1_info_p50_ms, r.select1_p99_ms
    );
    println!(
        "{} clients for {:.0} s: {:.0} requests/s, {} errors; resident memory {:.0} MiB idle, {:.0} MiB after warm-up (start), {:.0} MiB at end ({:+.0}%)",
        r.clients,
        r.seconds,
        r.requests_per_second,
        r.errors,
        r.rss_idle_mib,
        r.rss_start_mib,
        r.rss_end_mib,
        100.0 * (r.rss_end_mib / r.rss_start_mib - 1.0)
    );
    println!(
        "of which anonymous (heap, stacks; file pages excluded): {:.0} MiB at start, {:.0} MiB at end ({:+.0}%)",
        r.anon_start_mib,
        r.anon_end_mib,
        100.0 * (r.anon_end_mib / r.anon_start_mib - 1.0)
    );
    println!(
        "anonymous memory each second ({} samples): max {:.0} MiB; median of the first quarter {:.0} MiB, of the last {:.0} MiB ({:+.0}%)",
        r.anon_samples_mib.len(),
        r.anon_max_mib,
        r.anon_first_quarter_mib,
        r.anon_last_quarter_mib,
        100.0 * (r.anon_last_quarter_mib / r.anon_first_quarter_mib - 1.0)
    );
    println!(
        "{:<24} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (op, s) in &r.ops {
        println!(
            "{op:<24} {:>9} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            s.count, s.errors, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        );
    }
    println!(
        "{} rows streamed through Flight SQL: {:.1} M rows/s; written to an Arrow file in process: {:.1} M rows/s ({:.0}%)",
        r.stream_rows,
        r.flight_rows_per_second / 1e6,
        r.local_arrow_rows_per_second / 1e6,
        100.0 * r.flight_rows_per_second / r.local_arrow_rows_per_second
    );
    Ok(())
}
