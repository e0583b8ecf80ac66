"""The one step the Python benchmark scripts share: run in the venv that
scripts/bench-venv.sh makes (scikit-learn, DuckDB, Polars, pyarrow,
matplotlib) when the interpreter that started the script lacks a package.

Imported by path-run scripts beside it (Python puts a script's own
directory first on sys.path).
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def reexec_unless_importable(*modules):
    """Returns when every module imports; otherwise re-executes the running
    script with the bench venv's interpreter (created once). Raises the
    ImportError when already there: the venv itself lacks the package."""
    try:
        for m in modules:
            importlib.import_module(m)
    except ImportError:
        py = subprocess.check_output([str(HERE / "bench-venv.sh")], text=True).strip()
        # A venv's python is often a symlink to the system one, so compare
        # environments (sys.prefix), not interpreter files; the variable
        # stops a loop if the venv itself lacks a package.
        venv = str(Path(py).parent.parent)
        if os.path.realpath(sys.prefix) == os.path.realpath(venv) or os.environ.get("OMEGA_BENCH_REEXEC"):
            raise
        os.environ["OMEGA_BENCH_REEXEC"] = "1"
        os.execv(py, [py, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])
