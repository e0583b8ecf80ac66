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

With --floor it measures the same two things against a Flight server that does
no work (pyarrow's own, grpc C++, answering from memory in another process):
the cost of the protocol and the client on this machine, below which no server
can go. The targets of #12 are judged against that floor.

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


def serve_floor(port, rows):
    """The floor: a Flight server with nothing to do. `SELECT 1` answers one
    row; a generate_series command answers the same two int64 columns as om,
    built before the server starts, in DataFusion's 8,192-row batches."""
    import pyarrow as pa
    import pyarrow.compute as pc

    one = pa.table({"one": pa.array([1], pa.int64())})
    value = pa.array(range(1, rows + 1), pa.int64())
    series = pa.table({"value": value, "twice": pc.multiply(value, 2)}).combine_chunks()
    batches = series.to_batches(max_chunksize=8192)

    class Floor(flight.FlightServerBase):
        def get_flight_info(self, context, descriptor):
            answer = series if b"generate_series" in descriptor.command else one
            endpoint = flight.FlightEndpoint(descriptor.command, [])
            return flight.FlightInfo(answer.schema, descriptor, [endpoint], answer.num_rows, -1)

        def do_get(self, context, ticket):
            if b"generate_series" in ticket.ticket:
                return flight.RecordBatchStream(pa.Table.from_batches(batches))
            return flight.RecordBatchStream(one)

    Floor(f"grpc://127.0.0.1:{port}").serve()


def connect(port, server, log_path, options):
    """A client of the server on `port`, once it answers."""
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    deadline = time.time() + 60
    while True:
        try:
            client.wait_for_available(timeout=1)
            return client
        except Exception:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"server did not start:\n{Path(log_path).read_text()}")


def measure(client, options, round_trips, rows, runs):
    """`SELECT 1` round trips (ms: p50, p99, GetFlightInfo p50) and, when rows,
    the seconds of each streamed run of the series into pyarrow."""

    def query(sql):
        t = time.perf_counter()
        descriptor = flight.FlightDescriptor.for_command(statement_query(sql))
        info = client.get_flight_info(descriptor, options)
        planned = time.perf_counter() - t
        return client.do_get(info.endpoints[0].ticket, options).read_all(), planned

    for _ in range(200):  # warm-up: connections, caches
        query("SELECT 1")
    total, info = [], []
    for _ in range(round_trips):
        t = time.perf_counter()
        table, planned = query("SELECT 1")
        total.append((time.perf_counter() - t) * 1e3)
        info.append(planned * 1e3)
        assert table.column(0)[0].as_py() == 1
    total.sort()
    trips = (statistics.median(total), total[int(len(total) * 0.99)], statistics.median(info))
    streamed = []
    for _ in range(runs if rows else 0):
        t = time.perf_counter()
        table, _ = query(series_sql(rows))
        streamed.append(time.perf_counter() - t)
        assert table.num_rows == rows, table.num_rows
        del table
    return trips, streamed


def series_sql(rows):
    return f"SELECT value, value * 2 AS twice FROM generate_series(1, {rows})"


def stop(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-floor":
        return serve_floor(int(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    release = REPO / "target/release/om"
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release/om"
    default = next((str(p) for p in (release, target) if p.is_file()), shutil.which("om") or str(release))
    ap.add_argument("--om", default=default, help="the om binary (default: target/release/om, else om on the PATH)")
    ap.add_argument("--round-trips", type=int, default=2000, help="timed SELECT 1 round trips")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the streamed result (0: skip)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the stream and of the file")
    ap.add_argument("--floor", action="store_true", help="also measure a Flight server that does no work")
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
    log = work / "serve.log"
    server = subprocess.Popen(
        [om, "serve", "--flight", f"127.0.0.1:{fport}", "--http", f"127.0.0.1:{hport}"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    try:
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())])
        client = connect(fport, server, log, options)
        trips, streamed = measure(client, options, a.round_trips, a.rows, a.runs)
        client.close()
        stop(server)
        written = []
        for _ in range(a.runs if a.rows else 0):
            out = work / "result.arrow"
            t = time.perf_counter()
            om_run("sql", series_sql(a.rows), "--format", "arrow", "-o", str(out))
            written.append(time.perf_counter() - t)
            out.unlink()
        floor = None
        if a.floor:
            port, log = free_port(), work / "floor.log"
            server = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(port), str(a.rows)],
                stdout=open(log, "w"), stderr=subprocess.STDOUT,
            )
            client = connect(port, server, log, flight.FlightCallOptions())
            floor = measure(client, flight.FlightCallOptions(), a.round_trips, a.rows, a.runs)
            client.close()
            stop(server)
        report(a, trips, streamed, written, floor)
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


def report(a, trips, streamed, written, floor):
    def line(name, t):
        return f"{name}: p50 {t[0]:.3f} ms, p99 {t[1]:.3f} ms (GetFlightInfo p50 {t[2]:.3f} ms)"

    print(f"SELECT 1 round trip, {a.round_trips} trips")
    print("  " + line("om serve", trips))
    if floor:
        print("  " + line("floor (a Flight server doing nothing)", floor[0]))
    if a.rows:
        ws = a.rows / min(written) / 1e6
        fs = a.rows / min(streamed) / 1e6
        print(f"{a.rows} rows into pyarrow, best of {a.runs}")
        print(f"  `om sql --format arrow -o FILE`: {ws:.1f} M rows/s")
        print(f"  om serve through Flight SQL: {fs:.1f} M rows/s ({fs / ws:.0%} of the file rate)")
        if floor:
            rate = a.rows / min(floor[1]) / 1e6
            print(f"  floor (from memory, no query): {rate:.1f} M rows/s ({rate / ws:.0%} of the file rate)")


if __name__ == "__main__":
    main()
