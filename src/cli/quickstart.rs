//! `om quickstart`: writes a small generated sample (taxi trips) as CSV, puts
//! it into the store, lists it, reads it back, runs a filtered get, appends,
//! reads an old version, fits a model and predicts with it in SQL — each step
//! with the `om` command that does it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CliError;
use super::output::{OutFormat, write_frame};
use crate::models::{Input, ModelSpec, TrainingData};
use crate::store::{FileFormat, GetOptions, Object, PutMode, PutOptions};
use crate::{ListOptions, Omega};

/// Rows in the generated sample.
pub const SAMPLE_ROWS: usize = 10_000;

/// Writes the deterministic sample CSV (a fixed-seed generator, so every
/// machine gets the same data) and returns its path.
pub fn write_sample(path: &Path, rows: usize) -> Result<(), CliError> {
    let mut state: u64 = 0x005e_ed0f_0e6a;
    let mut next = move || {
        // xorshift64*: tiny, deterministic, good enough for sample data
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut csv = String::with_capacity(rows * 80);
    csv.push_str("trip_id,vendor,pickup,passengers,distance_km,fare,payment,note\n");
    let vendors = ["A", "B", "C"];
    let payments = ["card", "cash", "app"];
    for i in 0..rows {
        let vendor = vendors[(next() % 3) as usize];
        let minute = (i as u64 * 7 + next() % 7) % (60 * 24 * 30);
        let (day, rem) = (minute / (60 * 24), minute % (60 * 24));
        let passengers = 1 + next() % 4;
        let distance = 0.5 + (next() % 3000) as f64 / 100.0;
        let fare = 3.0 + distance * 1.9 + (next() % 500) as f64 / 100.0;
        let payment = payments[(next() % 3) as usize];
        let note = match next() % 10 {
            0 => "airport",
            1 => "late night",
            _ => "",
        };
        let _ = writeln!(
            csv,
            "{i},{vendor},2024-06-{:02}T{:02}:{:02}:00Z,{passengers},{distance:.2},{fare:.2},{payment},{note}",
            day + 1,
            rem / 60,
            rem % 60
        );
    }
    std::fs::write(path, csv).map_err(|e| CliError::io(path, e))
}

/// Step 8: a model fitted by dataset name, scored, and used inside SQL.
async fn models(om: &Omega) -> Result<(), CliError> {
    let models = om.models();
    println!(
        "\n== 8. fit a model on the dataset (every fit is a model version)\n$ om models fit fare trips --type linear_regression --features distance_km,passengers,vendor --label fare"
    );
    let spec = ModelSpec::new("linear_regression", Default::default())?;
    let report = models
        .fit(
            "fare",
            TrainingData::dataset("trips")
                .features(&["distance_km", "passengers", "vendor"])
                .label("fare"),
            Some(spec),
            Default::default(),
        )
        .await?;
    println!(
        "fitted fare version {} on {} rows in {:.3}s; fare ≈ {:.2} + {:.2} × distance_km",
        report.meta.version,
        report.rows,
        report.fit_seconds,
        report.meta.kind_meta["intercept"]
            .as_f64()
            .unwrap_or(f64::NAN),
        report.meta.kind_meta["coefficients"]["distance_km"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    println!("\n$ om models score fare trips@1");
    for (k, v) in models
        .score("fare", Input::Dataset("trips@1".into()))
        .await?
    {
        println!("{k:<10} {v:.4}");
    }
    let query = "SELECT trip_id, distance_km, fare, round(predict('fare', distance_km, passengers, vendor), 2) AS predicted FROM trips ORDER BY trip_id LIMIT 5";
    println!("\n== 9. predict inside SQL\n$ om sql \"{query}\"");
    write_frame(om.sql(query).await?, OutFormat::Table, None, None).await?;
    let query = "SELECT metric, round(value, 4) AS value FROM evaluate('fare', 'trips')";
    println!("\n$ om sql \"{query}\"");
    write_frame(om.sql(query).await?, OutFormat::Table, None, None).await?;
    Ok(())
}

async fn show(
    om: &Omega,
    title: &str,
    cmd: &str,
    name: &str,
    opts: GetOptions,
) -> Result<(), CliError> {
    println!("\n== {title}\n$ {cmd}");
    let df = om.datasets().get_frame(name, opts).await?;
    write_frame(df, OutFormat::Table, None, None).await?;
    Ok(())
}

pub async fn run(om: &Omega, sample: Option<PathBuf>) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("omega-quickstart-{}", std::process::id()));
    let path = match sample {
        Some(p) => p,
        None => {
            std::fs::create_dir_all(&dir).map_err(|e| CliError::io(&dir, e))?;
            dir.join("trips.csv")
        }
    };
    write_sample(&path, SAMPLE_ROWS)?;
    println!("omegastore quickstart — store at {}", om.root().url());
    println!("\n== 1. put a CSV file as a dataset (a Delta table)");
    println!(
        "$ om datasets put {} trips --mode overwrite",
        path.display()
    );
    let store = om.datasets();
    let file = || Object::File {
        path: path.clone(),
        format: FileFormat::Csv,
        schema: None,
    };
    let meta = store
        .put(
            file(),
            "trips",
            PutOptions {
                mode: PutMode::Overwrite,
                attributes: Some(
                    serde_json::json!({"source": "quickstart"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                ..Default::default()
            },
        )
        .await?;
    println!(
        "stored trips version {} ({} rows)",
        meta.version, meta.kind_meta["rows"]
    );

    println!("\n== 2. list the store\n$ om datasets list --long");
    for m in store.list(None, &ListOptions::default()).await? {
        println!(
            "{:<24} {:<14} v{:<4} {} rows",
            m.name,
            m.kind,
            m.version,
            m.kind_meta.get("rows").unwrap_or(&serde_json::Value::Null)
        );
    }

    show(
        om,
        "3. read it back",
        "om datasets get trips --limit 5",
        "trips",
        GetOptions {
            limit: Some(5),
            ..Default::default()
        },
    )
    .await?;
    show(
        om,
        "4. a filtered get (projection and filter pushed down to Parquet)",
        "om datasets get trips --columns trip_id,vendor,distance_km,fare --where \"fare > 60 AND vendor = 'B'\" --limit 5",
        "trips",
        GetOptions {
            columns: Some(vec!["trip_id".into(), "vendor".into(), "distance_km".into(), "fare".into()]),
            filter: Some("fare > 60 AND vendor = 'B'".into()),
            limit: Some(5),
        },
    )
    .await?;

    println!(
        "\n== 5. append the same file: a new version\n$ om datasets put {} trips",
        path.display()
    );
    let meta = store.put(file(), "trips", PutOptions::default()).await?;
    println!(
        "stored trips version {} ({} rows)",
        meta.version, meta.kind_meta["rows"]
    );
    let v = meta.version - 1;
    let old = store.metadata(&format!("trips@{v}")).await?;
    println!(
        "\n== 6. time travel\n$ om datasets info trips@{v}   # {} rows, Delta version {}",
        old.kind_meta["rows"], old.kind_meta["delta_version"]
    );
    let query = "SELECT vendor, count(*) AS trips, round(avg(fare), 2) AS avg_fare FROM trips GROUP BY vendor ORDER BY vendor";
    println!("\n== 7. SQL over every dataset in the store\n$ om sql \"{query}\"");
    write_frame(om.sql(query).await?, OutFormat::Table, None, None).await?;
    println!("\n$ om sql 'SELECT count(*) FROM \"trips@1\"'   # time travel in SQL");
    write_frame(
        om.sql("SELECT count(*) AS trips_in_v1 FROM \"trips@1\"")
            .await?,
        OutFormat::Table,
        None,
        None,
    )
    .await?;
    models(om).await?;
    if path.starts_with(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "\nNext: om datasets history trips · om models history fare · om models algorithms · om sql (a shell) · om --help"
    );
    Ok(())
}
