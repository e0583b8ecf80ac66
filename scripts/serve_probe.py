#!/usr/bin/env python3
"""`om serve` measured from a client process of its own (pyarrow.flight).

    scripts/serve_probe.py --om target/release/om --rows 10000000

`om bench serve` runs its clients inside the server's process; this script
measures the server alone, as a Flight SQL client in another process sees it:

1. `SELECT 1` round trips (GetFlightInfo + DoGet), one after another on one
   connection: p50 / p99, and the GetFlightInfo part;
2. a --rows-row result (`generate_series`, two int64 columns) streamed through
   Flight into pyarrow, against `om sql … --format arrow -o FILE` (the same
   query written to an Arrow file by a fresh process): rows per second, best
   of --runs.

It makes a fresh root in a temporary directory, grants `read` to a role,
creates a key, starts `om serve` on free loopback ports and stops it on exit.
pyarrow comes from scripts/requirements-bench.txt (the script re-executes
itself in the venv scripts/bench-venv.sh makes when pyarrow is missing).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from bench_venv import reexec_unless_importable  # noqa: E402

reexec_unless_importable("pyarrow.flight")

import pyarrow.flight as flight  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def field(number, data):
    return bytes([number << 3 | 2]) + varint(len(data)) + data


def statement_query(sql):
    """A Flight SQL CommandStatementQuery packed in an Any, encoded by hand
    (pyarrow has Flight but not Flight SQL's messages)."""
    url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, url) + field(2, field(1, sql.encode()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    release = REPO / "target/release/om"
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release/om"
    default = next((str(p) for p in (release, target) if p.is_file()), shutil.which("om") or str(release))
    ap.add_argument("--om", default=default, help="the om binary (default: target/release/om, else om on the PATH)")
    ap.add_argument("--round-trips", type=int, default=2000, help="timed SELECT 1 round trips")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the streamed result (0: skip)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the stream and of the file")
    a = ap.parse_args()
    om = str(Path(a.om).resolve())
    if not Path(om).is_file():
        sys.exit(f"{om} not found: build it first (cargo build --release) or pass --om")

    work = Path(tempfile.mkdtemp(prefix="om-probe-"))
    env = dict(os.environ, OMEGA_ROOT=str(work / "root"))
    env.pop("OMEGA_CLUSTER", None)

    def om_run(*args):
        return subprocess.run([om, *args], env=env, check=True, capture_output=True, text=True).stdout

    om_run("sql", "GRANT read ON BUCKET default TO analyst")
    key = om_run("keys", "create", "--bucket", "default", "--role", "analyst", "--name", "probe").strip()
    fport, hport = free_port(), free_port()
    log = open(work / "serve.log", "w")
    server = subprocess.Popen(
        [om, "serve", "--flight", f"127.0.0.1:{fport}", "--http", f"127.0.0.1:{hport}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        client = flight.FlightClient(f"grpc://127.0.0.1:{fport}")
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())])
        deadline = time.time() + 30
        while True:
            try:
                client.wait_for_available(timeout=1)
                break
            except Exception:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"om serve did not start:\n{(work / 'serve.log').read_text()}")

        def query(sql):
            t = time.perf_counter()
            descriptor = flight.FlightDescriptor.for_command(statement_query(sql))
            info = client.get_flight_info(descriptor, options)
            planned = time.perf_counter() - t
            return client.do_get(info.endpoints[0].ticket, options).read_all(), planned

        for _ in range(200):  # warm-up: connections, caches
            query("SELECT 1")
        total, info = [], []
        for _ in range(a.round_trips):
            t = time.perf_counter()
            table, planned = query("SELECT 1")
            total.append((time.perf_counter() - t) * 1e3)
            info.append(planned * 1e3)
            assert table.column(0)[0].as_py() == 1
        total.sort()
        print(
            f"SELECT 1 round trip: p50 {statistics.median(total):.3f} ms, "
            f"p99 {total[int(len(total) * 0.99)]:.3f} ms "
            f"(GetFlightInfo p50 {statistics.median(info):.3f} ms), {a.round_trips} trips"
        )
        if a.rows:
            sql = f"SELECT value, value * 2 AS twice FROM generate_series(1, {a.rows})"
            streamed, written = [], []
            for _ in range(a.runs):
                t = time.perf_counter()
                table, _ = query(sql)
                streamed.append(time.perf_counter() - t)
                assert table.num_rows == a.rows, table.num_rows
                del table
                out = work / "result.arrow"
                t = time.perf_counter()
                om_run("sql", sql, "--format", "arrow", "-o", str(out))
                written.append(time.perf_counter() - t)
                out.unlink()
            fs, ws = a.rows / min(streamed) / 1e6, a.rows / min(written) / 1e6
            print(
                f"{a.rows} rows through Flight SQL into pyarrow: {fs:.1f} M rows/s; "
                f"`om sql --format arrow -o FILE`: {ws:.1f} M rows/s ({fs / ws:.0%})"
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
