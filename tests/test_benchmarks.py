"""Smoke test of the benchmark suite: `benchmarks/run_all.py --quick` runs and writes its two reports.

No timing is asserted (the machine is shared); only that every section produced its rows.
"""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {  # section -> metric prefixes that must appear
    "1. localizer scoring": ["max |kit − generate(max_new_tokens=30)|", "max |kit − generate(max_new_tokens=2)|",
                             "speed-up vs official generate, max_new_tokens=30",
                             "speed-up vs official generate, max_new_tokens=2"],
    "2. k × prompt sweep": ["speed-up of the Evaluator sweep over recomputing all 12 settings, mini-world videos",
                            "speed-up predicted from component timings"],
    "3. throughput and efficiency": ["forward chain n=32→k=4, questions/s", "forward chain FLOPs per question",
                                     "forward chain achieved FLOP/s / matmul FLOP/s",
                                     "pseudo-labelling (teacher-forced, each frame alone) frames/s",
                                     "matmul 2048×2048 fp32"],
    "4. memory": ["forward chain peak RSS, batch 1", "forward chain peak RSS, batch 4",
                  "streamed evaluation peak RSS, 160 / 10 questions"],
    "5. training": ["Answerer fine-tuning", "Localizer refinement"],
    "profile and library change": ["share of the chain: localizer T5 encoder", "forward chain speed-up, per-question",
                                   "candidate NOT applied"],
}


def test_quick_benchmarks_write_the_reports(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--out", str(tmp_path),
                           "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "benchmarks.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"section", "metric", "shape", "value", "unit", "target", "met", "note"}
    for section, metrics in EXPECTED.items():
        names = [r["metric"] for r in rows if r["section"] == section]
        for metric in metrics:
            assert any(name.startswith(metric) for name in names), (section, metric, names)
    for row in rows:
        float(row["value"])  # every value is a number
        assert row["met"] in ("", "yes", "no")
    # the correctness checks inside the benchmarks passed
    assert all(float(r["value"]) <= 1e-5 for r in rows if r["metric"].startswith("max |kit − generate"))
    md = (tmp_path / "benchmarks.md").read_text()
    for heading in ["## Targets", "## Model shapes", "## 1. localizer scoring", "## 2. k × prompt sweep",
                    "## 3. throughput and efficiency", "## 4. memory", "## 5. training",
                    "## Profile and library change"]:
        assert heading in md, heading
    assert "| tiny |" in md and "| mini |" in md  # the shapes used are printed
