"""`make bench`: run every benchmark script here, each writing benchmarks/results/NAME.json, then a summary.

Each is runnable alone from the repository root as ``python -m benchmarks.NAME [--quick]`` (a
package run from the root imports the project and ``tests.support`` without any import-path edits). Pass ``--quick`` here to
forward it (``make bench BENCH_ARGS=--quick``). A failing benchmark is reported and the others go on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")
    )
    rows = []
    failed = 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{script.stem}", *argv], cwd=HERE.parent
        )
        wall = time.perf_counter() - t0
        out = RESULTS / f"{script.stem}.json"
        ok = proc.returncode == 0 and out.is_file()
        failed += not ok
        headline = ""
        if ok:
            data = json.loads(out.read_text())
            headline = str(data.get("summary", ""))[:90]
        rows.append(
            (script.stem, "ok" if ok else f"FAILED ({proc.returncode})", f"{wall:.0f} s", headline)
        )
    print("\nbenchmark            status       wall    summary")
    for name, status, wall, headline in rows:
        print(f"{name:<20} {status:<12} {wall:>6}  {headline}")
    (RESULTS / "summary.json").write_text(
        json.dumps(
            [dict(zip(("name", "status", "wall", "summary"), r, strict=True)) for r in rows],
            indent=2,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
