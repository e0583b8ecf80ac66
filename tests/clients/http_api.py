"""The HTTP API through Python's urllib: every route, every content type,
bad input, unknown names and wrong roles. Run by tests/clients.rs against a
live `om serve` started with --max-body 1MiB.

Environment: OM_HTTP (http://host:port), OM_KEY_WRITER, OM_KEY_ANALYST.
"""
import io
import json
import os
import sys
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet

BASE = os.environ["OM_HTTP"]
WRITER = os.environ["OM_KEY_WRITER"]
ANALYST = os.environ["OM_KEY_ANALYST"]
CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1


def call(method, path, key=WRITER, body=None, content_type=None, accept=None):
    request = urllib.request.Request(BASE + path, data=body, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if content_type:
        request.add_header("Content-Type", content_type)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def error(status, body, code, label):
    check(status is not None, label)
    try:
        doc = json.loads(body)
    except ValueError:
        raise AssertionError(f"{label}: not a JSON error: {body[:200]!r}")
    check(doc["error"]["code"] == code, f"{label}: {status} {doc}")
    check(doc["error"]["message"], f"{label}: no message")


def main():
    status, _, body = call("GET", "/healthz", key=None)
    check(status == 200, "healthz")
    status, _, body = call("GET", "/readyz", key=None)
    check(status == 200, "readyz")

    # deny by default
    status, _, body = call("GET", "/api/v1/datasets", key=None)
    check(status == 401, f"no key: {status}")
    error(status, body, "unauthenticated", "no key")
    status, _, body = call("GET", "/api/v1/datasets", key="oms_bad")
    check(status == 401, "bad key")

    # list, read in every format
    status, ctype, body = call("GET", "/api/v1/datasets?pattern=*&kind=table.delta")
    names = {m["name"] for m in json.loads(body)}
    check(status == 200 and {"t", "v"} <= names, f"list: {names}")
    status, ctype, body = call("GET", "/api/v1/datasets/v?columns=id,name&where=id%20%3C%203&limit=10")
    rows = json.loads(body)
    check(ctype.startswith("application/json") and len(rows) == 3, f"json: {rows}")
    check(set(rows[0]) == {"id", "name"}, rows[0])
    status, ctype, body = call("GET", "/api/v1/datasets/v?offset=2&limit=3", accept="text/csv")
    table = pa.csv.read_csv(io.BytesIO(body))
    check(ctype.startswith("text/csv") and table.num_rows == 3, f"csv: {table.num_rows}")
    status, ctype, body = call("GET", "/api/v1/datasets/v", accept="application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(body).read_all()
    check(table.num_rows == 10 and table.schema.names == ["id", "name", "score"], "arrow")
    status, ctype, body = call("GET", "/api/v1/datasets/v", accept="application/vnd.apache.parquet")
    table = pa.parquet.read_table(io.BytesIO(body))
    check(table.num_rows == 10, "parquet")
    status, _, body = call("GET", "/api/v1/datasets/v", accept="image/png")
    error(status, body, "bad_request", "unsupported Accept")

    # write in every format: PUT replaces, POST appends
    csv = b"id,name,score\n1,a,0.5\n2,b,1.5\n"
    status, _, body = call("PUT", "/api/v1/datasets/sales%2F2024", body=csv, content_type="text/csv")
    check(status == 201 and json.loads(body)["name"] == "sales/2024", f"put csv: {status} {body[:200]}")
    lines = b'{"id": 3, "name": "c", "score": 2.5}\n{"id": 4, "name": "d", "score": 3.5}\n'
    status, _, body = call("POST", "/api/v1/datasets/sales%2F2024?mode=append", body=lines,
                           content_type="application/x-ndjson")
    check(status == 200 and json.loads(body)["version"] == 2, f"append jsonl: {body[:200]}")
    sink = io.BytesIO()
    batch = pa.table({"id": [5], "name": ["e"], "score": [4.5]})
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_table(batch)
    status, _, body = call("POST", "/api/v1/datasets/sales%2F2024", body=sink.getvalue(),
                           content_type="application/vnd.apache.arrow.stream")
    check(status == 200 and json.loads(body)["version"] == 3, f"append arrow: {body[:200]}")
    sink = io.BytesIO()
    pa.parquet.write_table(batch, sink)
    status, _, body = call("PUT", "/api/v1/datasets/one?mode=overwrite", body=sink.getvalue(),
                           content_type="application/vnd.apache.parquet")
    check(status == 201, f"put parquet: {body[:200]}")
    status, _, body = call("PUT", "/api/v1/datasets/doc", body=b'{"a": [1, 2]}',
                           content_type="application/json")
    check(status == 201, f"put document: {body[:200]}")
    status, _, body = call("GET", "/api/v1/datasets/doc")
    check(json.loads(body) == {"a": [1, 2]}, "document round trip")
    status, _, body = call("GET", "/api/v1/datasets/sales%2F2024?where=id%20%3E%3D%203",
                           accept="text/csv")
    check(pa.csv.read_csv(io.BytesIO(body)).num_rows == 3, "appended rows")
    status, _, body = call("GET", "/api/v1/datasets/sales%2F2024/history")
    check([m["version"] for m in json.loads(body)] == [1, 2, 3], "history")
    status, _, body = call("GET", "/api/v1/datasets/sales%2F2024/metadata")
    check(json.loads(body)["version"] == 3, "metadata")
    status, _, body = call("PUT", "/api/v1/datasets/one?mode=error", body=sink.getvalue(),
                           content_type="application/vnd.apache.parquet")
    error(status, body, "conflict", "mode=error on an existing name")
    check(status == 409, f"409: {status}")
    status, _, body = call("PUT", "/api/v1/datasets/x?mode=sideways", body=csv, content_type="text/csv")
    error(status, body, "bad_request", "unknown mode")
    status, _, body = call("PUT", "/api/v1/datasets/x", body=b"<xml/>", content_type="application/xml")
    check(status == 422, f"unknown content type: {status}")
    # urllib sends its whole body before it reads: the 413 must still reach it
    status, _, body = call("PUT", "/api/v1/datasets/x", body=b"1" * (16 << 20), content_type="text/csv")
    check(status == 413, f"oversized: {status}")
    error(status, body, "too_large", "oversized")
    status, _, body = call("DELETE", "/api/v1/datasets/one")
    check(status == 200, "delete")
    status, _, body = call("GET", "/api/v1/datasets/one")
    check(status == 404, f"deleted: {status}")
    error(status, body, "not_found", "deleted")
    status, _, body = call("GET", "/api/v1/datasets/%2E%2E%2Fetc")
    check(status == 400, f"bad name: {status}")

    # SQL with parameters, in each format; bad JSON; bad SQL
    q = json.dumps({"sql": "SELECT count(*) AS n FROM v WHERE id > ?", "params": [6]}).encode()
    status, _, body = call("POST", "/api/v1/sql", body=q, content_type="application/json")
    check(json.loads(body) == [{"n": 3}], f"sql: {body}")
    status, _, body = call("POST", "/api/v1/sql", body=q, content_type="application/json",
                           accept="application/vnd.apache.arrow.stream")
    check(pa.ipc.open_stream(body).read_all().column("n").to_pylist() == [3], "sql arrow")
    status, _, body = call("POST", "/api/v1/sql", body=b'{"sql": ', content_type="application/json")
    error(status, body, "bad_request", "bad JSON")
    status, _, body = call("POST", "/api/v1/sql", body=b'{"query": 1}', content_type="application/json")
    check(status == 422, f"wrong JSON shape: {status}")
    status, _, body = call("POST", "/api/v1/sql", body=json.dumps({"sql": "SELEC 1"}).encode(),
                           content_type="application/json")
    error(status, body, "bad_request", "bad SQL")

    # models: list, metadata, predict (JSON and Arrow in), fit
    status, _, body = call("GET", "/api/v1/models")
    check("m" in {m["name"] for m in json.loads(body)}, f"models: {body[:200]}")
    status, _, body = call("GET", "/api/v1/models/m")
    check(json.loads(body)["name"] == "m", "model metadata")
    rows = json.dumps([{"id": 1}, {"id": 2}]).encode()
    status, _, body = call("POST", "/api/v1/models/m/predict", body=rows, content_type="application/json")
    check(status == 200 and len(json.loads(body)) == 2, f"predict: {status} {body[:200]}")
    status, _, body = call("POST", "/api/v1/models/m@1/predict", body=rows, content_type="application/json")
    check(status == 200, f"predict name@version: {status} {body[:200]}")
    sink = io.BytesIO()
    ids = pa.table({"id": pa.array([1, 2, 3], pa.int64())})
    with pa.ipc.new_stream(sink, ids.schema) as w:
        w.write_table(ids)
    status, _, body = call("POST", "/api/v1/models/m/predict", body=sink.getvalue(),
                           content_type="application/vnd.apache.arrow.stream",
                           accept="application/vnd.apache.arrow.stream")
    check(pa.ipc.open_stream(body).read_all().num_rows == 3, "predict arrow")
    fit = json.dumps({"dataset": "v", "label": "score", "features": ["id"]}).encode()
    status, _, body = call("POST", "/api/v1/models/m/fit", body=fit, content_type="application/json")
    check(status == 200 and json.loads(body)["model"]["version"] == 2, f"fit: {body[:300]}")
    fit = json.dumps({"sql": "SELECT id, score FROM v WHERE id > 2", "label": "score"}).encode()
    status, _, body = call("POST", "/api/v1/models/m/fit", body=fit, content_type="application/json")
    check(status == 200 and json.loads(body)["rows"] == 7, f"fit on SQL: {body[:300]}")
    status, _, body = call("POST", "/api/v1/models/m/fit", body=b'{"dataset": "v", "sql": "SELECT 1"}',
                           content_type="application/json")
    check(status == 422, f"fit with both inputs: {status}")
    status, _, body = call("POST", "/api/v1/models/nope/predict", body=rows, content_type="application/json")
    check(status == 404, f"unknown model: {status}")

    # the analyst: the row filter holds, writes are forbidden
    status, _, body = call("GET", "/api/v1/datasets/t", key=ANALYST)
    check(len(json.loads(body)) == 4, "row filter through HTTP")
    q = json.dumps({"sql": "SELECT count(*) AS n FROM t"}).encode()
    status, _, body = call("POST", "/api/v1/sql", key=ANALYST, body=q, content_type="application/json")
    check(json.loads(body) == [{"n": 4}], f"row filter through SQL: {body}")
    status, _, body = call("PUT", "/api/v1/datasets/t", key=ANALYST, body=csv, content_type="text/csv")
    error(status, body, "forbidden", "analyst write")
    check(status == 403, f"403: {status}")
    status, _, body = call("DELETE", "/api/v1/datasets/t", key=ANALYST)
    check(status == 403, f"analyst delete: {status}")
    status, _, body = call("GET", "/api/v1/nowhere")
    check(status == 404, "unknown route")
    print(f"http_api.py: {CHECKS} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"http_api.py: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
