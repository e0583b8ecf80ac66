#!/usr/bin/env bash
# Creates (once) the Python environment the peer comparisons use and prints
# its interpreter: scikit-learn, DuckDB, Polars, pyarrow, matplotlib.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${OMEGA_BENCH_VENV:-$HOME/.cache/omegastore-bench-venv}"
if ! "$venv/bin/python" -c "import sklearn, duckdb, polars, pyarrow, matplotlib" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements-bench.txt" >&2
fi
echo "$venv/bin/python"
