#!/usr/bin/env python3
"""A Ballista cluster of `om` processes on this machine over an S3 root
(moto on loopback), and the measurements docs/SCALING.md is based on.

    scripts/cluster.py --om target/release/om --sf 1

Starts moto, one `om cluster scheduler` and two `om cluster executor`s,
stores TPC-H at --sf in the S3 root, runs the 22 queries locally and on the
cluster (`om bench tpch`, then with `--cluster`), checks that both give the
same answers, and for each query counts the S3 requests its planning makes
(EXPLAIN on the client: records, Delta logs, no data) and the whole query
makes, and the bytes the executors shuffle (what their work directories
gain). Prints a Markdown table; stops everything it started on exit.

moto comes from .ci/requirements-s3.txt, installed once into a venv
(OMEGA_VENV, default ~/.cache/omegastore-venv, the one CI uses).
"""

import argparse
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROCS = []


def stop_all():
    for p in reversed(PROCS):
        if p.poll() is None:
            p.terminate()
    for p in PROCS:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


atexit.register(stop_all)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server():
    venv = Path(os.environ.get("OMEGA_VENV", Path.home() / ".cache/omegastore-venv"))
    exe = venv / "bin/moto_server"
    if not exe.exists():
        print(f"installing moto into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin/pip"), "install", "--quiet", "-r", str(REPO / ".ci/requirements-s3.txt")],
            check=True,
        )
    return exe


def start(args, log, env):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    PROCS.append(p)
    return p


def wait_for(log, text, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if text in Path(log).read_text(errors="replace"):
            return
        if proc.poll() is not None:
            sys.exit(f"{log}: exited early:\n{Path(log).read_text(errors='replace')}")
        time.sleep(0.1)
    sys.exit(f"{log}: never said {text!r}")


def requests(moto_log):
    # one access-log line per request: ... "GET /bucket/key HTTP/1.1" 200 -
    return sum(1 for line in Path(moto_log).read_text(errors="replace").splitlines() if 'HTTP/1.1' in line)


def tree_bytes(dirs):
    files = {}
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                p = os.path.join(root, n)
                try:
                    files[p] = os.path.getsize(p)
                except OSError:
                    pass
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    release = REPO / "target/release/om"
    default_om = str(release) if release.exists() else (shutil.which("om") or str(release))
    ap.add_argument("--om", default=default_om, help="the om binary (default: target/release/om, else om on the PATH)")
    ap.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per query")
    ap.add_argument("--json", help="also write the measurements here")
    a = ap.parse_args()
    om = str(Path(a.om).resolve())
    if not Path(om).exists():
        sys.exit(f"{om} not found: build it first (cargo build --release) or pass --om")
    work = Path(tempfile.mkdtemp(prefix="om-cluster-"))
    env = dict(os.environ)
    mport = free_port()
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{mport}",
        OMEGA_ROOT="s3://omega-cluster/tpch",
    )
    env.pop("OMEGA_CLUSTER", None)
    moto_log = work / "moto.log"
    moto = start([str(moto_server()), "-H", "127.0.0.1", "-p", str(mport)], moto_log, env)
    for _ in range(100):
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}/omega-cluster", method="PUT"))
            break
        except OSError:
            if moto.poll() is not None:
                sys.exit(moto_log.read_text())
            time.sleep(0.1)
    sport = free_port()
    sched = start([om, "cluster", "scheduler", "--bind", f"127.0.0.1:{sport}"], work / "scheduler.log", env)
    wait_for(work / "scheduler.log", "listening", sched)
    workdirs = []
    for i in (1, 2):
        wd = work / f"executor{i}"
        wd.mkdir()
        workdirs.append(wd)
        log = work / f"executor{i}.log"
        p = start(
            [om, "cluster", "executor", "--scheduler", f"127.0.0.1:{sport}", "--port", str(free_port()),
             "--grpc-port", str(free_port()), "--work-dir", str(wd)],
            log,
            env,
        )
        wait_for(log, "serving", p)
    url = f"df://127.0.0.1:{sport}"
    print(f"cluster {url}: scheduler and 2 executors over {env['OMEGA_ROOT']} (moto on 127.0.0.1:{mport}); logs in {work}", file=sys.stderr)

    def bench(cluster, answers):
        args = [om, "bench", "tpch", "--sf", str(a.sf), "--runs", str(a.runs), "--format", "json", "--answers", str(answers)]
        if cluster:
            args += ["--cluster", url]
        out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
        return {t["name"]: t for t in json.loads(out)["timings"]}

    print("loading TPC-H and running it locally", file=sys.stderr)
    local = bench(False, work / "local")
    print("running it on the cluster", file=sys.stderr)
    remote = bench(True, work / "cluster")

    def norm(path):
        rows = []
        for line in path.read_text().splitlines():
            fields = []
            for f in line.split(","):
                try:
                    fields.append(f"{float(f):.6e}" if "." in f else f)
                except ValueError:
                    fields.append(f)
            rows.append(",".join(fields))
        return sorted(rows)

    rows = []
    for q in range(1, 23):
        name = f"q{q:02}"
        sql = (REPO / "sql/tpch" / f"{name}.sql").read_text()
        same = norm(work / "local" / f"{name}.csv") == norm(work / "cluster" / f"{name}.csv")
        bucket = ["--bucket", "tpch_sf" + ("%g" % a.sf).replace(".", "_")]  # as om names it
        r0 = requests(moto_log)
        subprocess.run([om, *bucket, "sql", "--cluster", url, "--format", "csv", f"EXPLAIN {sql}"], env=env, check=True, capture_output=True)
        r1 = requests(moto_log)
        # Ballista deletes a job's shuffle files when it ends: watch the work
        # directories while the query runs and keep the largest size each
        # new file reached
        before = tree_bytes(workdirs)
        seen = {}
        q = subprocess.Popen([om, *bucket, "sql", "--cluster", url, "--format", "csv", "--file", str(REPO / "sql/tpch" / f"{name}.sql")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while q.poll() is None:
            for p, size in tree_bytes(workdirs).items():
                if p not in before:
                    seen[p] = max(size, seen.get(p, 0))
            time.sleep(0.05)
        if q.returncode != 0:
            sys.exit(f"{name} failed on the cluster: {q.stderr.read().decode()}")
        r2 = requests(moto_log)
        shuffled = sum(seen.values())
        rows.append({
            "query": name,
            "local_ms": local[name]["median"] * 1e3,
            "cluster_ms": remote[name]["median"] * 1e3,
            "same_answer": same,
            "planning_requests": r1 - r0,
            "query_requests": r2 - r1,
            "shuffled_bytes": shuffled,
        })
    print(f"| query | local ms | cluster ms | ratio | same answer | S3 requests: planning / whole query | bytes shuffled |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['query']} | {r['local_ms']:.0f} | {r['cluster_ms']:.0f} | {r['cluster_ms'] / r['local_ms']:.2f}× | "
              f"{'yes' if r['same_answer'] else 'NO'} | {r['planning_requests']} / {r['query_requests']} | {r['shuffled_bytes'] / 1e6:.2f} MB |")
    tl = sum(r["local_ms"] for r in rows)
    tc = sum(r["cluster_ms"] for r in rows)
    print(f"| sum | {tl:.0f} | {tc:.0f} | {tc / tl:.2f}× | | | {sum(r['shuffled_bytes'] for r in rows) / 1e6:.1f} MB |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if not all(r["same_answer"] for r in rows):
        sys.exit("some answers differ between the local run and the cluster")


if __name__ == "__main__":
    main()
