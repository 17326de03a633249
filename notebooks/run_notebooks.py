"""Executes every notebook of notebooks/ (as CI does) and fails on the first error.

    python notebooks/run_notebooks.py [--out DIR] [NAME.ipynb ...]

Each notebook runs with notebooks/ as its working directory, from a copy: the committed files
stay without outputs. The executed copies, and the PNG figures the notebooks save, go to DIR
(default: target/notebooks), where they can be looked at.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    p.add_argument("--out", default=str(HERE.parent / "target" / "notebooks"))
    p.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = a.names or sorted(q.name for q in HERE.glob("*.ipynb"))
    for name in names:
        src = HERE / name
        nb = nbformat.read(src, as_version=4)
        if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            print(f"{name}: committed with outputs; strip them (the runner writes executed copies)")
            return 1
        t0 = time.time()
        # A scratch copy of notebooks/ as working directory: the figures land there, not in git.
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "notebooks"
            work.mkdir()
            (Path(tmp) / "tests").symlink_to(HERE.parent / "tests")
            (Path(tmp) / "priors").symlink_to(HERE.parent / "priors")
            client = NotebookClient(
                nb, timeout=a.timeout, kernel_name="python3", resources={"metadata": {"path": str(work)}}
            )
            try:
                client.execute()
            except Exception as e:  # nbclient raises CellExecutionError with the traceback
                nbformat.write(nb, out / name)
                print(f"{name}: FAILED after {time.time() - t0:.0f} s\n{e}")
                return 1
            for png in work.glob("*.png"):
                shutil.copy(png, out / png.name)
        nbformat.write(nb, out / name)
        print(f"{name}: ok in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
