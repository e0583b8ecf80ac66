//! `om datasets …`: put, get, list, info, history, tag, external, drop.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Map, Value};

use super::output::{OutFormat, write_frame};
use super::{CliError, progress};
use crate::store::{Data, ExternalFormat, FileFormat, GetOptions, Object, PutMode, PutOptions};
use crate::{ListOptions, Metadata, Omega};

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Store a file (CSV, Parquet, JSON lines → table; JSON → document; raw → file).
    Put {
        file: PathBuf,
        name: String,
        /// Format of FILE (default: from its extension; unknown extensions are raw).
        #[arg(long, value_parser = parse_file_format)]
        format: Option<FileFormat>,
        /// append (default for existing tables), overwrite, or error if the name exists.
        #[arg(long, value_parser = parse_put_mode)]
        mode: Option<PutMode>,
        /// On append, add new columns (nullable) instead of failing.
        #[arg(long)]
        merge_schema: bool,
        /// Attributes as a JSON object (merged into the existing ones; '{}' resets).
        #[arg(long)]
        attributes: Option<String>,
        /// Store with this kind's backend.
        #[arg(long)]
        kind: Option<String>,
        /// Tables: write the rows sorted by these columns and keep it as the table's
        /// sort order (appends follow it), so filters on them skip row groups and files.
        #[arg(long, value_delimiter = ',', value_name = "COL,...")]
        sort_by: Vec<String>,
        /// Tables: write Bloom filters for these columns (appends keep them), so
        /// `col = value` lookups skip row groups that do not hold the value.
        #[arg(long, value_delimiter = ',', value_name = "COL,...")]
        bloom: Vec<String>,
    },
    /// Read a dataset: NAME, NAME@VERSION or NAME@TAG.
    Get {
        name: String,
        /// Output format (table on a terminal by default).
        #[arg(long, value_enum)]
        format: Option<OutFormat>,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        limit: Option<usize>,
        /// Comma-separated columns to read.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Filter expression, e.g. "fare > 10 AND vendor = 'A'".
        #[arg(long = "where")]
        filter: Option<String>,
    },
    /// List datasets matching a glob PATTERN (`*` within a segment, `**` across).
    List {
        pattern: Option<String>,
        /// Show kind, version, rows and modification time.
        #[arg(long, short)]
        long: bool,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Include hidden names (starting with '.' or '_').
        #[arg(long)]
        hidden: bool,
    },
    /// Metadata of a dataset (or version) as JSON.
    Info { name: String },
    /// All versions of a dataset.
    History { name: String },
    /// Point a tag at a version (default: the latest).
    Tag {
        name: String,
        tag: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Register a Parquet/CSV/JSON-lines/Delta location, read in place.
    External {
        location: String,
        name: String,
        #[arg(long, value_parser = parse_external_format)]
        format: ExternalFormat,
    },
    /// Compact a table's small files (after many appends) into large ones: a new version, same rows.
    Optimize {
        name: String,
        /// Rewrite the rows sorted by these columns instead, and keep that as the
        /// table's sort order (appends follow it).
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "COL,...",
            conflicts_with = "zorder"
        )]
        sort_by: Vec<String>,
        /// Rewrite the rows clustered along a Z-order curve of these columns, so
        /// filters on any of them skip files (appends do not follow it).
        #[arg(long, value_delimiter = ',', value_name = "COL,...")]
        zorder: Vec<String>,
        /// Rewrite the rows (in their order, or sorted by --sort-by in the same
        /// rewrite) with Bloom filters on these columns instead, kept for later
        /// writes; `--bloom ''` writes none.
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "COL,...",
            conflicts_with = "zorder"
        )]
        bloom: Option<Vec<String>>,
    },
    /// Keep a table's latest version in memory in long-lived processes (om serve
    /// --cache-memory, an application with a cache budget); --off to stop.
    Cache {
        name: String,
        #[arg(long)]
        off: bool,
    },
    /// Remove old versions of a dataset, keeping the newest N (records first, then data only they used).
    Vacuum {
        name: String,
        /// Versions to keep.
        #[arg(long)]
        keep: usize,
        /// Also remove tagged versions (and their tags).
        #[arg(long)]
        force: bool,
        /// Inside tables, remove only files older than this (s, m, h, d; `0` for all).
        #[arg(long, default_value = "1h", value_parser = super::gc::parse_duration)]
        older_than: std::time::Duration,
    },
    /// Drop a dataset, or every match of a glob pattern.
    Drop {
        name: String,
        /// Succeed when nothing matches.
        #[arg(long)]
        force: bool,
    },
}

fn parse_file_format(s: &str) -> Result<FileFormat, String> {
    s.parse()
}

fn parse_put_mode(s: &str) -> Result<PutMode, String> {
    s.parse()
}

fn parse_external_format(s: &str) -> Result<ExternalFormat, String> {
    serde_json::from_value(Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown format '{s}': use parquet, csv, json or delta"))
}

fn parse_attributes(s: Option<&str>) -> Result<Option<Map<String, Value>>, CliError> {
    let Some(s) = s else { return Ok(None) };
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(CliError::Usage(format!(
            "--attributes must be a JSON object, got: {s}"
        ))),
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::Usage(format!("cannot print JSON: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::io("<stdout>", e))
}

fn rows_of(m: &Metadata) -> String {
    m.kind_meta
        .get("rows")
        .and_then(Value::as_u64)
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn run(om: &Omega, cmd: DatasetsCommand) -> Result<(), CliError> {
    let store = om.datasets();
    match cmd {
        DatasetsCommand::Put {
            file,
            name,
            format,
            mode,
            merge_schema,
            attributes,
            kind,
            sort_by,
            bloom,
        } => {
            let format = format
                .or_else(|| FileFormat::from_path(&file))
                .unwrap_or(FileFormat::Raw);
            let size = std::fs::metadata(&file)
                .map_err(|e| CliError::io(&file, e))?
                .len();
            let pb = progress::bar(
                (format != FileFormat::Parquet).then_some(size),
                &format!("put {name}"),
            );
            let opts = PutOptions {
                mode: mode.unwrap_or_default(),
                kind,
                merge_schema,
                attributes: parse_attributes(attributes.as_deref())?,
                progress: Some(pb.clone()),
                if_head: None,
                sort_by,
                bloom_filters: bloom,
            };
            let obj = Object::File {
                path: file,
                format,
                schema: None,
            };
            let meta = store.put(obj, &name, opts).await;
            pb.finish_and_clear();
            let meta = meta?;
            println!(
                "stored {} version {} ({}, {} rows)",
                meta.name,
                meta.version,
                meta.kind,
                rows_of(&meta)
            );
        }
        DatasetsCommand::Get {
            name,
            format,
            output,
            limit,
            columns,
            filter,
        } => {
            let meta = store.metadata(&name).await?;
            let opts = GetOptions {
                columns,
                filter,
                limit,
            };
            match store.get_version(&meta, &opts).await? {
                Data::Table(df) => {
                    let format = format.unwrap_or(match &output {
                        Some(p) => OutFormat::from_extension(p),
                        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                            OutFormat::Table
                        }
                        None => OutFormat::Csv,
                    });
                    let total = meta.kind_meta.get("rows").and_then(Value::as_u64);
                    let pb = progress::bar(None, &format!("get {name}"));
                    if let Some(t) = total {
                        pb.set_message(format!("get {name} ({t} rows)"));
                    }
                    let rows = write_frame(df, format, output.as_deref(), Some(&pb)).await;
                    pb.finish_and_clear();
                    let rows = rows.map_err(|e| match e {
                        CliError::DataFusion(e) => {
                            CliError::Store(crate::store::objects::read_error(&meta, e))
                        }
                        e => e,
                    })?;
                    if let Some(out) = &output {
                        eprintln!("wrote {rows} rows to {}", out.display());
                    }
                }
                Data::Document(v) => match &output {
                    Some(p) => std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap_or_default())
                        .map_err(|e| CliError::io(p, e))?,
                    None => print_json(&v)?,
                },
                Data::File { .. } => match &output {
                    Some(p) => {
                        let pb = progress::bar(Some(0), &format!("get {name}"));
                        let n = store.get_to_file(&name, p, Some(&pb)).await;
                        pb.finish_and_clear();
                        eprintln!("wrote {} bytes to {}", n?, p.display());
                    }
                    None => {
                        let bytes = store.get_bytes(&name).await?;
                        std::io::stdout()
                            .lock()
                            .write_all(&bytes)
                            .map_err(|e| CliError::io("<stdout>", e))?;
                    }
                },
                Data::Any(_) => {
                    return Err(CliError::Usage(format!(
                        "'{name}' is of kind '{}', which the command line cannot print",
                        meta.kind
                    )));
                }
            }
        }
        DatasetsCommand::List {
            pattern,
            long,
            kind,
            hidden,
        } => {
            let metas = store
                .list(pattern.as_deref(), &ListOptions { kind, hidden })
                .await?;
            let mut out = std::io::stdout().lock();
            let w = |out: &mut std::io::StdoutLock, s: String| {
                writeln!(out, "{s}").map_err(|e| CliError::io("<stdout>", e))
            };
            if long {
                w(
                    &mut out,
                    format!(
                        "{:<32} {:<16} {:>7} {:>12}  {}",
                        "NAME", "KIND", "VERSION", "ROWS", "MODIFIED"
                    ),
                )?;
                for m in &metas {
                    w(
                        &mut out,
                        format!(
                            "{:<32} {:<16} {:>7} {:>12}  {}",
                            m.name,
                            m.kind,
                            m.version,
                            rows_of(m),
                            m.modified.format("%Y-%m-%d %H:%M:%S")
                        ),
                    )?;
                }
            } else {
                for m in &metas {
                    w(&mut out, m.name.clone())?;
                }
            }
        }
        DatasetsCommand::Info { name } => print_json(&store.metadata(&name).await?)?,
        DatasetsCommand::History { name } => {
            let history = store.history(&name).await?;
            let tags = store.tags(&history[0].name).await?;
            println!(
                "{:>7}  {:<20} {:<16} {:>12}  TAGS",
                "VERSION", "MODIFIED", "KIND", "ROWS"
            );
            for m in &history {
                let t: Vec<&str> = tags
                    .iter()
                    .filter(|(_, v)| *v == m.version)
                    .map(|(t, _)| t.as_str())
                    .collect();
                println!(
                    "{:>7}  {:<20} {:<16} {:>12}  {}",
                    m.version,
                    m.modified.format("%Y-%m-%d %H:%M:%S"),
                    m.kind,
                    rows_of(m),
                    t.join(",")
                );
            }
        }
        DatasetsCommand::Tag { name, tag, version } => {
            let meta = store.tag(&name, &tag, version).await?;
            println!("{}@{} -> version {}", meta.name, tag, meta.version);
        }
        DatasetsCommand::External {
            location,
            name,
            format,
        } => {
            let meta = store
                .put(
                    Object::External {
                        url: location,
                        format,
                    },
                    &name,
                    PutOptions::default(),
                )
                .await?;
            println!(
                "registered {} version {} -> {}",
                meta.name, meta.version, meta.uri
            );
        }
        DatasetsCommand::Optimize { name, zorder, .. } if !zorder.is_empty() => {
            let before = store.metadata(&name).await?;
            let change = crate::store::TableChange::ZOrder(zorder.clone());
            let (meta, rows) = store.change_table(&name, change).await?;
            println!(
                "Z-ordered {rows} rows of {name} by {} into {} files (version {} -> {})",
                zorder.join(", "),
                meta.kind_meta["files"],
                before.version,
                meta.version
            );
        }
        DatasetsCommand::Optimize {
            name,
            sort_by,
            bloom,
            ..
        } if !sort_by.is_empty() || bloom.is_some() => {
            // both in one rewrite: one new version
            let bloom: Option<Vec<String>> =
                bloom.map(|b| b.into_iter().filter(|c| !c.is_empty()).collect());
            let mut how = Vec::new();
            if !sort_by.is_empty() {
                how.push(format!("sorted by {}", sort_by.join(", ")));
            }
            match &bloom {
                Some(b) if b.is_empty() => how.push("with no Bloom filters".into()),
                Some(b) => how.push(format!("with Bloom filters on {}", b.join(", "))),
                None => {}
            }
            let change = crate::store::TableChange::Rewrite {
                sort_by: (!sort_by.is_empty()).then_some(sort_by),
                bloom_filters: bloom,
            };
            let before = store.metadata(&name).await?;
            let (meta, rows) = store.change_table(&name, change).await?;
            println!(
                "rewrote {rows} rows of {name} {} into {} files (version {} -> {})",
                how.join(" "),
                meta.kind_meta["files"],
                before.version,
                meta.version
            );
        }
        DatasetsCommand::Optimize { name, .. } => {
            let before = store.metadata(&name).await?;
            let (meta, removed) = store
                .change_table(&name, crate::store::TableChange::Compact)
                .await?;
            if removed == 0 {
                println!("{name} version {} has nothing to compact", meta.version);
            } else {
                println!(
                    "compacted {removed} files of {name} into {} (version {} -> {})",
                    meta.kind_meta["files"], before.version, meta.version
                );
            }
        }
        DatasetsCommand::Cache { name, off } => {
            let meta = crate::sql::table_settings::set_cache(om.engine(), &name, !off).await?;
            if off {
                println!("{name}: memory cache off (version {})", meta.version);
            } else {
                println!(
                    "{name}: cached in memory by long-lived processes (om serve --cache-memory) from now on (version {})",
                    meta.version
                );
            }
        }
        DatasetsCommand::Vacuum {
            name,
            keep,
            force,
            older_than,
        } => {
            let report = store.vacuum(&name, keep, force, older_than).await?;
            if report.versions.is_empty() {
                println!("{name} has no more than {keep} versions; nothing removed");
            } else {
                let versions: Vec<String> = report.versions.iter().map(u64::to_string).collect();
                println!("removed versions {} of {name}", versions.join(", "));
            }
            super::gc::print_report(&report.gc, false);
        }
        DatasetsCommand::Drop { name, force } => {
            let dropped = store.drop(&name, force).await?;
            if dropped.is_empty() {
                println!("nothing to drop");
            }
            for d in dropped {
                println!("dropped {d}");
            }
        }
    }
    Ok(())
}
