//! `om sql`: run SQL from the command line, a file, or an interactive shell.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use datafusion::common::ScalarValue;

use super::CliError;
use super::output::{OutFormat, write_frame};
use crate::Omega;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (several statements separated by ';' are run in order).
    pub query: Option<String>,
    /// Read the statements from this file.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// A value for $1, $2, … (repeat in order); numbers and true/false are typed.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Output format (table on a terminal, else csv).
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,
    /// Write the result to this file.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the time each statement took (on stderr).
    #[arg(long)]
    pub timing: bool,
    /// Reject statements that write.
    #[arg(long)]
    pub read_only: bool,
    /// Run as this user, with --role roles (fixes the identity mixins see).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Run the queries' scans on this Ballista cluster (df://HOST:PORT; see `om cluster`).
    #[arg(long, env = "OMEGA_CLUSTER")]
    pub cluster: Option<String>,
}

/// `42` → Int64, `4.2` → Float64, `true` → Boolean, anything else → Utf8.
pub fn parse_param(s: &str) -> ScalarValue {
    if let Ok(i) = s.parse::<i64>() {
        ScalarValue::Int64(Some(i))
    } else if let Ok(f) = s.parse::<f64>() {
        ScalarValue::Float64(Some(f))
    } else if let Ok(b) = s.parse::<bool>() {
        ScalarValue::Boolean(Some(b))
    } else {
        ScalarValue::Utf8(Some(s.to_string()))
    }
}

pub async fn run(om: &Omega, args: SqlArgs) -> Result<(), CliError> {
    let clustered = super::cluster::on_cluster(om, args.cluster.as_deref()).await?;
    let om = &clustered;
    let om = if args.user.is_some() || !args.roles.is_empty() || args.read_only {
        let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
        om.with_identity(args.user.as_deref().unwrap_or(""), &roles, args.read_only)?
    } else {
        om.clone()
    };
    let params: Vec<ScalarValue> = args.params.iter().map(|p| parse_param(p)).collect();
    let text = match (&args.query, &args.file) {
        (Some(q), None) => q.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| CliError::io(f, e))?,
        (Some(_), Some(_)) => {
            return Err(CliError::Usage("give a query or --file, not both".into()));
        }
        (None, None) if std::io::stdin().is_terminal() => return shell(&om, &args).await,
        (None, None) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| CliError::io("<stdin>", e))?;
            s
        }
    };
    run_text(&om, &text, &params, &args).await
}

async fn run_text(
    om: &Omega,
    text: &str,
    params: &[ScalarValue],
    args: &SqlArgs,
) -> Result<(), CliError> {
    let start = Instant::now();
    let df = om.sql_with_params(text, params).await?;
    let format = args.format.unwrap_or(match &args.output {
        Some(p) => OutFormat::from_extension(p),
        None if std::io::stdout().is_terminal() => OutFormat::Table,
        None => OutFormat::Csv,
    });
    let rows = write_frame(df, format, args.output.as_deref(), None).await?;
    if args.timing {
        eprintln!("{rows} rows in {:.3} s", start.elapsed().as_secs_f64());
    }
    if let Some(o) = &args.output {
        eprintln!("wrote {rows} rows to {}", o.display());
    }
    Ok(())
}

/// A line-editing shell: statements end with ';', history is kept in
/// `~/.omega_history`, `\q` or Ctrl-D quits.
async fn shell(om: &Omega, args: &SqlArgs) -> Result<(), CliError> {
    use rustyline::error::ReadlineError;
    let mut rl = rustyline::DefaultEditor::new()
        .map_err(|e| CliError::Usage(format!("cannot start the shell: {e}")))?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".omega_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "omegastore SQL on {} (bucket {}). End statements with ';', \\q quits.",
        om.root().url(),
        om.bucket_name()
    );
    let shell_args = SqlArgs {
        query: None,
        file: None,
        params: vec![],
        format: Some(args.format.unwrap_or(OutFormat::Table)),
        output: None,
        timing: args.timing,
        read_only: args.read_only,
        user: args.user.clone(),
        roles: args.roles.clone(),
        cluster: None, // the shell's session already uses it
    };
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "om> " } else { "..> " };
        match rl.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit")
                {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let _ = rl.add_history_entry(buffer.trim());
                    let text = std::mem::take(&mut buffer);
                    if let Err(e) = run_text(om, &text, &[], &shell_args).await {
                        eprintln!("error: {}", e.to_string().replace('\n', " "));
                    }
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::Usage(format!("shell input failed: {e}"))),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}
