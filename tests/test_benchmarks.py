"""Smoke test of the benchmark suite: `benchmarks/run_all.py --quick` runs every section and writes its reports.

No timing is asserted (the machine is shared); only that every section produced its rows and that the
correctness checks inside the benchmarks (kit read-out == official generate) passed.
"""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["1. localizer read-out", "2. k × prompt sweep", "3. throughput and efficiency", "4. memory",
            "5. training", "6. video decoding"]


def test_quick_benchmarks_write_the_reports(tmp_path):
    (tmp_path / "benchmarks.md").write_text("# old\n\n## Real shapes on this CPU\n\nkept figures\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--out", str(tmp_path),
                           "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "benchmarks.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"section", "metric", "shape", "value", "unit", "target", "met", "note"}
    assert [s for s in SECTIONS if not any(r["section"] == s for r in rows)] == []
    for row in rows:
        float(row["value"])
    assert all(float(r["value"]) <= 1e-5 for r in rows if r["metric"].startswith("max |kit"))
    md = (tmp_path / "benchmarks.md").read_text()
    for heading in ["## Targets", "## Model shapes", *[f"## {s}" for s in SECTIONS],
                    "## Scorer × rule grid vs one selector", "## Real shapes on this CPU\n\nkept figures"]:
        assert heading in md, heading
    assert "| tiny |" in md and "| mini |" in md
