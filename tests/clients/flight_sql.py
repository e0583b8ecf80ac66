"""Flight SQL through ADBC (adbc-driver-flightsql) and pyarrow: clients
nobody here wrote. Run by tests/clients.rs against a live `om serve`.

Environment: OM_FLIGHT (grpc://host:port), OM_KEY_WRITER, OM_KEY_ANALYST,
OM_KEY_REVOKED.
"""
import os
import sys

import adbc_driver_flightsql as flightsql
import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)

URI = os.environ["OM_FLIGHT"]
CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1


def connect(key):
    header = flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    return dbapi.connect(URI, db_kwargs={header: f"Bearer {key}"}, autocommit=True)


def refused(key, label):
    try:
        with connect(key) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
    except adbc_driver_manager.Error as e:
        check("UNAUTHENTICATED" in str(e).upper(), f"{label}: {e}")
        return
    raise AssertionError(f"{label}: a query ran")


def main():
    refused("oms_000000000000_" + "0" * 64, "unknown key")
    refused("not-a-key", "malformed key")
    refused(os.environ["OM_KEY_REVOKED"], "revoked key")

    with connect(os.environ["OM_KEY_WRITER"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM u ORDER BY id")
        table = cur.fetch_arrow_table()
        check(table.num_rows == 10, f"rows of u: {table.num_rows}")
        check(table.column_names == ["id", "name"], table.column_names)

        # cursor.execute always prepares; `?` binds by position
        cur.execute("SELECT count(*) AS n FROM u WHERE id >= ? AND name <> ?", (5, "name-7"))
        check(cur.fetchone()[0] == 3, "parameters bound")  # 6, 8, 9 (5 has a NULL name)
        cur.execute("SELECT $2 - $1 AS d", (1, 10))
        check(cur.fetchone()[0] == 9, "$n placeholders")

        # executemany: one INSERT per row; executescript: statements in order
        cur.executemany("INSERT INTO u VALUES (?, ?, ?)", [(100, "a", 1.0), (101, "b", 2.0)])
        cur.executescript(
            "INSERT INTO u VALUES (102, 'c', 3.0); DELETE FROM u WHERE id = 100"
        )
        # executemany over no rows (bound as Arrow data, so the driver sends it): nothing runs
        nothing = pa.table({"id": pa.array([], pa.int64()), "name": pa.array([], pa.string()),
                            "x": pa.array([], pa.float64())})
        cur.executemany("INSERT INTO u VALUES (?, ?, ?)", nothing)
        cur.execute("SELECT count(*) FROM u")
        check(cur.fetchone()[0] == 12, "executemany + executescript")

        # bulk ingest: create, then append: two versions; 1M rows back out
        data = pa.table({"k": pa.array(range(500_000), pa.int64()),
                         "v": pa.array([float(i) / 3 for i in range(500_000)])})
        check(cur.adbc_ingest("big", data, mode="create") == 500_000, "ingest create")
        check(cur.adbc_ingest("big", data, mode="append") == 500_000, "ingest append")
        try:
            cur.adbc_ingest("big", data.slice(0, 10), mode="create")
            raise AssertionError("create on an existing dataset")
        except adbc_driver_manager.Error as e:
            check("already exists" in str(e), str(e))
        small = data.slice(0, 10)
        check(cur.adbc_ingest("small", small, mode="create_append") == 10, "create_append creates")
        check(cur.adbc_ingest("small", small, mode="create_append") == 10, "create_append appends")
        check(cur.adbc_ingest("small", small.slice(0, 3), mode="replace") == 3, "replace")
        cur.execute("SELECT count(*) FROM small")
        check(cur.fetchone()[0] == 3, "replace replaced the rows")
        try:
            cur.adbc_ingest("missing", small, mode="append")
            raise AssertionError("append to a missing dataset")
        except adbc_driver_manager.Error as e:
            check("does not exist" in str(e), str(e))
        cur.execute("SELECT * FROM big")
        result = cur.fetch_arrow_table()
        check(result.num_rows == 1_000_000, f"1M rows: {result.num_rows}")
        check(pa.compute.sum(result.column("k")).as_py() == 2 * sum(range(500_000)), "values")

        schema = conn.adbc_get_table_schema("u")
        check(schema.names == ["id", "name", "score"], schema.names)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = {
            t["table_name"]
            for c in objects
            for s in c["catalog_db_schemas"] or []
            if s["db_schema_name"] == "default"
            for t in s["db_schema_tables"] or []
        }
        check({"t", "u", "big"} <= tables, f"tables: {tables}")
        types = {
            t["table_name"]: t["table_type"]
            for c in objects
            for s in c["catalog_db_schemas"] or []
            if s["db_schema_name"] == "default"
            for t in s["db_schema_tables"] or []
        }
        check(types["u"] == "TABLE", f"a dataset is a TABLE: {types}")
        buckets = {s["db_schema_name"] for c in objects for s in c["catalog_db_schemas"] or []}
        check("hr" not in buckets, f"another bucket is visible: {buckets}")

    # the analyst's row filter applies; it may not write
    with connect(os.environ["OM_KEY_ANALYST"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM t")
        check(cur.fetchone()[0] == 4, "row filter through Flight SQL")
        try:
            cur.execute("INSERT INTO t VALUES (1, 'x', 1.0)")
            cur.fetchall()
            raise AssertionError("an analyst wrote")
        except adbc_driver_manager.Error as e:
            check("lacks write" in str(e), str(e))
        try:
            cur.execute("SET omega.roles = 'admin'; SELECT count(*) FROM t")
            raise AssertionError("an identity was widened")
        except adbc_driver_manager.Error as e:
            check("identity was fixed" in str(e), str(e))
        # a SET lasts for its own request only: alone it is refused
        cur.execute("SET datafusion.execution.batch_size = 3; SHOW datafusion.execution.batch_size")
        check(cur.fetchone()[1] == "3", "a SET reaches the rest of its script")
        try:
            cur.execute("SET datafusion.execution.batch_size = 1")
            raise AssertionError("a lone SET was accepted")
        except adbc_driver_manager.Error as e:
            check("as one script" in str(e), str(e))
    print(f"flight_sql.py: {CHECKS} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"flight_sql.py: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
