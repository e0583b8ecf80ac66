#!/usr/bin/env python3
"""omegastore against DuckDB, Polars, pyarrow and scikit-learn, in one run.

Runs `om bench ops` (and, with --tpch, `om bench tpch`), then the same
operations on the same files with the peers; checks that every engine
returns the same answers; prints omegastore's time / the best peer's time
per operation and draws the ratios as a PNG chart.

    scripts/peers.py --rows 10000000 --tpch 1 --chart bench.png --json bench.json

Its Python packages come from scripts/requirements-bench.txt: run it with
the interpreter `scripts/bench-venv.sh` prints (the script re-executes
itself there when the packages are missing).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from bench_venv import reexec_unless_importable  # noqa: E402

reexec_unless_importable("duckdb", "polars", "pyarrow", "sklearn", "matplotlib")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import sklearn  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402

# The SQL of `om bench ops` (src/bench/ops.rs), with the answer column.
QUERIES = {
    "filtered_count": ("SELECT count(*) FROM ops WHERE amount > 100 AND category = 'c07'", 0),
    "group_by": ("SELECT category, count(*) AS n, avg(amount) AS avg_amount, sum(quantity) AS qty FROM ops GROUP BY category ORDER BY category", 2),
    "join": ("SELECT c.segment, sum(o.amount) AS total FROM ops o JOIN customers c ON o.customer = c.customer GROUP BY c.segment ORDER BY c.segment", 1),
    "top_k": ("SELECT id, amount FROM ops ORDER BY amount DESC, id LIMIT 10", 1),
    "point_lookup": ("SELECT * FROM ops WHERE id = 4242", 6),
}
FEATURES = ["x1", "x2", "quantity"]


def timed(fn, runs, warmup=True):
    if warmup:
        fn()
    times, out = [], None
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def om_cmd(args):
    if args.om:
        return [args.om]
    for p in (REPO / "target/release/om", Path(os.environ.get("CARGO_TARGET_DIR", "")) / "release/om"):
        if p.is_file():
            return [str(p)]
    return ["cargo", "run", "--release", "--quiet", "--bin", "om", "--"]


def run_om(args, *rest):
    cmd = [*om_cmd(args), "--root", args.root, *rest, "--format", "json"]
    print("$", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout)


def close(a, b, rel=1e-6):
    a, b = float(a), float(b)
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def ops_peers(args, omega):
    data = Path(args.data)
    rows = args.rows
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"CREATE VIEW ops AS SELECT * FROM read_parquet('{data / 'ops.parquet'}')")
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet('{data / 'customers.parquet'}')")
    tmp = data / "peer-out"
    tmp.mkdir(exist_ok=True)
    peers = {}  # op -> {engine: seconds}, answers
    answers = {}

    # put from CSV: CSV -> Parquet
    _, t = timed(lambda: con.execute(f"COPY (SELECT * FROM read_csv('{data / 'ops.csv'}')) TO '{tmp / 'duck.parquet'}' (FORMAT parquet)").fetchall(), 1, warmup=False)
    peers["put_csv"] = {"duckdb": t}
    _, t = timed(lambda: pl.scan_csv(data / "ops.csv").sink_parquet(tmp / "polars.parquet"), 1, warmup=False)
    peers["put_csv"]["polars"] = t
    _, t = timed(lambda: pq.write_table(pacsv.read_csv(data / "ops.csv"), tmp / "pyarrow.parquet"), 1, warmup=False)
    peers["put_csv"]["pyarrow"] = t

    # put from Arrow: an in-memory table -> Parquet
    table = pq.read_table(data / "ops.parquet")
    _, t = timed(lambda: pq.write_table(table, tmp / "pyarrow2.parquet"), 1, warmup=False)
    peers["put_arrow"] = {"pyarrow": t}
    frame = pl.from_arrow(table)
    _, t = timed(lambda: frame.write_parquet(tmp / "polars2.parquet"), 1, warmup=False)
    peers["put_arrow"]["polars"] = t
    _, t = timed(lambda: con.from_arrow(table).write_parquet(str(tmp / "duck2.parquet")), 1, warmup=False)
    peers["put_arrow"]["duckdb"] = t
    del frame

    # get: the whole table as Arrow
    out, t = timed(lambda: pq.read_table(data / "ops.parquet"), args.runs)
    peers["get"] = {"pyarrow": t}
    answers["get"] = out.num_rows
    _, t = timed(lambda: pl.read_parquet(data / "ops.parquet"), args.runs)
    peers["get"]["polars"] = t
    _, t = timed(lambda: con.sql("SELECT * FROM ops").to_arrow_table(), args.runs)
    peers["get"]["duckdb"] = t
    del table

    lazy = pl.scan_parquet(data / "ops.parquet")
    cust = pl.scan_parquet(data / "customers.parquet")
    polars_q = {
        "filtered_count": lambda: lazy.filter((pl.col("amount") > 100) & (pl.col("category") == "c07")).select(pl.len()).collect(),
        "group_by": lambda: lazy.group_by("category").agg(pl.len(), pl.col("amount").mean(), pl.col("quantity").sum()).sort("category").collect(),
        "join": lambda: lazy.join(cust, on="customer").group_by("segment").agg(pl.col("amount").sum()).sort("segment").collect(),
        "top_k": lambda: lazy.sort(["amount", "id"], descending=[True, False]).head(10).select("id", "amount").collect(),
        "point_lookup": lambda: lazy.filter(pl.col("id") == 4242).collect(),
    }
    for name, (sql, col) in QUERIES.items():
        res, t = timed(lambda: con.sql(sql).fetchall(), args.runs)
        peers[name] = {"duckdb": t}
        answers[name] = sum(float(r[col]) for r in res)
        _, t = timed(polars_q[name], args.runs)
        peers[name]["polars"] = t

    # om's queries on its memory-cached tables, against DuckDB on Parquet
    for name in QUERIES:
        peers[name + "_cached"] = {"duckdb": peers[name]["duckdb"]}
        answers[name + "_cached"] = answers[name]

    # models, on the same leading rows as `om bench ops`
    m = pq.read_table(data / "ops.parquet").slice(0, args.model_rows).to_pandas()
    f = pq.read_table(data / "ops.parquet").slice(0, args.forest_rows).to_pandas()
    x, y, flag = m[FEATURES].to_numpy(float), m["amount"].to_numpy(), m["flag"].to_numpy()
    lr, t = timed(lambda: LinearRegression().fit(x, y), 1, warmup=False)
    peers["fit_linear"] = {"sklearn": t}
    answers["fit_linear"] = ("r2", lr.score(x, y))
    lg, t = timed(lambda: LogisticRegression(C=np.inf, max_iter=1000).fit(x, flag), 1, warmup=False)
    peers["fit_logistic"] = {"sklearn": t}
    answers["fit_logistic"] = ("accuracy", lg.score(x, flag))
    rf, t = timed(lambda: RandomForestClassifier(n_estimators=args.trees, max_depth=10, random_state=1, n_jobs=-1).fit(f[FEATURES].to_numpy(float), f["flag"].to_numpy()), 1, warmup=False)
    peers["fit_forest"] = {"sklearn": t}
    answers["fit_forest"] = ("accuracy", rf.score(f[FEATURES].to_numpy(float), f["flag"].to_numpy()))
    pred, t = timed(lambda: lr.predict(x), args.runs)
    peers["predict_linear"] = {"sklearn": t}
    answers["predict_linear"] = float(pred.sum())
    b0, c = float(lr.intercept_), [float(v) for v in lr.coef_]
    sql = f"SELECT sum({b0!r} + {c[0]!r} * x1 + {c[1]!r} * x2 + {c[2]!r} * quantity) FROM ops"
    res, t = timed(lambda: con.sql(sql).fetchall(), args.runs)
    peers["predict_sql"] = {"duckdb": t}
    answers["predict_sql"] = float(res[0][0])
    return peers, answers


def check(omega, answers):
    problems = []
    for t in omega["timings"]:
        name, ans = t["name"], t.get("answer")
        if name not in answers or ans is None:
            continue
        want = answers[name]
        if isinstance(want, tuple):  # a model score: compare, with a margin
            metric, value = want
            got = float(ans.split()[-1])
            if got < value - 0.01:
                problems.append(f"{name}: omegastore {metric} {got:.4f} < scikit-learn {value:.4f}")
            continue
        rel = 1e-4 if name.startswith("predict") else 1e-6
        if not close(ans, want, rel):
            problems.append(f"{name}: omegastore {ans} vs peers {want}")
    return problems


def tpch(args):
    d = Path(args.data) / f"tpch-sf{args.tpch}"
    omega = run_om(args, "bench", "tpch", "--sf", str(args.tpch), "--runs", str(args.runs), "--export", str(d / "parquet"), "--answers", str(d / "omega"))
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for t in ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{d / 'parquet' / (t + '.parquet')}')")
    rows, problems = [], []
    om_times = {t["name"]: t["median"] for t in omega["timings"]}
    for n in range(1, 23):
        sql = (REPO / "sql" / "tpch" / f"q{n:02}.sql").read_text()
        res, t = timed(lambda: con.sql(sql).fetchall(), args.runs)
        mine = pacsv.read_csv(d / "omega" / f"q{n:02}.csv").to_pylist() if (d / "omega" / f"q{n:02}.csv").stat().st_size else []
        ok = len(mine) == len(res)
        for a, b in zip(mine, res):
            for x, y in zip(a.values(), b):
                if isinstance(y, (int, float)) or hasattr(y, "as_integer_ratio"):
                    ok &= close(x, float(y), 1e-6)
                else:
                    ok &= str(x).strip() == str(y).strip()
        if not ok:
            problems.append(f"q{n:02}: answers differ ({len(mine)} vs {len(res)} rows)")
        rows.append((f"q{n:02}", om_times.get(f"q{n:02}"), t, ok))
    return rows, problems, omega["peak_rss_bytes"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model-rows", type=int, default=1_000_000)
    p.add_argument("--forest-rows", type=int, default=100_000)
    p.add_argument("--trees", type=int, default=20)
    p.add_argument("--root", default="bench-store", help="the omegastore root to use")
    p.add_argument("--data", default="bench-data", help="where generated files go")
    p.add_argument("--om", help="the om binary (default: target/release/om, else cargo run --release)")
    p.add_argument("--tpch", type=float, help="also run TPC-H at this scale factor and compare answers with DuckDB")
    p.add_argument("--chart", default="bench.png")
    p.add_argument("--json", help="write all results here")
    args = p.parse_args()
    # om runs in the repository, the peers here: both must see the same files
    args.root = str(Path(args.root).resolve())
    args.data = str(Path(args.data).resolve())
    if args.om:
        args.om = str(Path(args.om).resolve()) if os.sep in args.om else args.om
    args.model_rows = min(args.model_rows, args.rows)
    args.forest_rows = min(args.forest_rows, args.rows)

    omega = run_om(args, "bench", "ops", "--rows", str(args.rows), "--runs", str(args.runs), "--data", args.data,
                   "--model-rows", str(args.model_rows), "--forest-rows", str(args.forest_rows), "--trees", str(args.trees))
    peers, answers = ops_peers(args, omega)
    problems = check(omega, answers)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"peers: duckdb {duckdb.__version__}, polars {pl.__version__}, pyarrow {pa.__version__}, scikit-learn {sklearn.__version__}")
    print(f"omegastore: peak memory {omega['peak_rss_bytes'] / 2**30:.2f} GiB over the ops run\n")
    print(f"| operation | rows | omegastore s | best peer | peer s | ratio |")
    print(f"| --- | ---: | ---: | --- | ---: | ---: |")
    table = []
    for t in omega["timings"]:
        name = t["name"]
        if name not in peers:
            continue
        best = min(peers[name], key=peers[name].get)
        ratio = t["median"] / peers[name][best]
        table.append((name, t["rows"], t["median"], best, peers[name][best], ratio, peers[name]))
        print(f"| {name} | {t['rows']} | {t['median']:.4f} | {best} | {peers[name][best]:.4f} | {ratio:.2f} |")
    tp = None
    if args.tpch:
        tp, tproblems, tpeak = tpch(args)
        problems += tproblems
        if tpeak:
            print(f"\nomegastore: peak memory {tpeak / 2**30:.2f} GiB over the TPC-H run")
        print(f"\n| TPC-H sf {args.tpch} | omegastore s | duckdb s | ratio | same answers |")
        print("| --- | ---: | ---: | ---: | --- |")
        for q, o, d, ok in tp:
            print(f"| {q} | {o:.4f} | {d:.4f} | {o / d:.2f} | {'yes' if ok else 'NO'} |")
    print()
    print("answers: all engines agree" if not problems else "answer mismatches:\n  " + "\n  ".join(problems))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r[0] for r in table] + ([q for q, *_ in tp] if tp else [])
    ratios = [r[5] for r in table] + ([o / d for _, o, d, _ in tp] if tp else [])
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.5))
    colors = ["#2a9d8f" if r <= 1 else "#e76f51" for r in ratios]
    ax.barh(labels[::-1], ratios[::-1], color=colors[::-1])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("omegastore time / best peer time (log scale; < 1 is faster)")
    scope = f"ops on {args.rows:,} rows" + (f", TPC-H sf {args.tpch:g}" if args.tpch else "")
    ax.set_title(f"omegastore vs DuckDB, Polars, pyarrow, scikit-learn ({scope})")
    fig.tight_layout()
    fig.savefig(args.chart, dpi=110)
    print(f"chart: {args.chart}")
    if args.json:
        Path(args.json).write_text(json.dumps({"omegastore": omega, "peers": peers, "answers": {k: v for k, v in answers.items()},
                                               "table": table, "tpch": tp, "problems": problems}, default=str, indent=1))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
