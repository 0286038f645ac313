"""`python -m sevila_lib.gpu_check` (`make gpu-check`) on a machine without CUDA: it says so, runs the tiny shapes
through every measurement (two gloo processes for the several-GPU path) and writes the report documented in
README; and it imports nothing beyond torch, transformers, accelerate and safetensors (and their dependencies).

Opt-in, slow: the same command in a virtual environment holding only those four packages. Build one with
    python3 -m venv /tmp/gpucheck && /tmp/gpucheck/bin/pip install torch==2.13.0 &&
    /tmp/gpucheck/bin/pip install transformers==5.23.0 accelerate==1.15.0 safetensors==0.8.0
and run `SEVILA_MINIMAL_PYTHON=/tmp/gpucheck/bin/python pytest tests/test_gpu_check.py`.
"""
import os
import re
import subprocess
import sys

import pytest

from sevila_lib import paths

# Importable on the GPU machine only if installed there: none of these may be imported by the check
# (PIL is not listed: transformers imports it by itself where it is installed).
NOT_ON_A_GPU_MACHINE = ["pandas", "av", "decord", "papermill", "nbformat", "matplotlib", "seaborn", "scipy",
                        "sklearn", "ipywidgets", "IPython", "pyarrow"]
SCRIPT = f"""
import sys
from sevila_lib import gpu_check
gpu_check.main(sys.argv[1:])
loaded = sorted(m for m in {NOT_ON_A_GPU_MACHINE!r} if m in sys.modules)
assert not loaded, f"gpu_check imported {{loaded}}"
"""


def run_check(python, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(paths.PROJECT_ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([python, "-c", SCRIPT, "--out", str(out), *extra], cwd=paths.PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def check_report(text: str, processes: bool):
    assert text.startswith("# GPU check (tiny)")
    assert "No CUDA GPU on this machine" in text
    for heading in ["## Inference beside the paper's Table 15", "## Localizer read-out: kit vs official",
                    "## Training: one optimiser step per stage"]:
        assert heading in text, heading
    assert re.search(r"\| SeViLA \(32→4\) \| 1 \| [\d.e-]+ \| [\d.]+ \| 3\.28 \| 7\.98 \|", text)
    assert re.search(r"\| Answerer \(4\) \| 8 \| [\d.e-]+ \| [\d.]+ \| 1\.79 \| 7\.56 \|", text)
    assert re.search(r"\| 2 \| 32 \| [\d.e-]+ \| [\d.e-]+ \| \*\*[\d.]+×\*\* \| 30\.0 \| 0 \|", text)  # same scores
    for stage in ("pretrain_localizer", "train_answerer", "refine_localizer", "pseudo-labelling only"):
        assert f"| {stage} |" in text, stage
    assert ("## Several processes (one per GPU)" in text) == processes
    if processes:
        assert re.search(r"\| 2 \| 16 \| [\d.e-]+ \|", text)


def test_gpu_check_on_cpu_runs_the_tiny_shapes_and_writes_the_report(tmp_path):
    done = run_check(sys.executable, tmp_path / "gpu_check.md", "--processes", "2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = (tmp_path / "gpu_check.md").read_text()
    check_report(text, processes=True)
    assert text.strip() in done.stdout  # printed as well as written


@pytest.mark.skipif(not os.environ.get("SEVILA_MINIMAL_PYTHON"), reason="opt-in: set SEVILA_MINIMAL_PYTHON "
                    "to the python of a venv holding only torch, transformers, accelerate and safetensors")
def test_gpu_check_runs_with_only_the_four_packages(tmp_path):
    python = os.environ["SEVILA_MINIMAL_PYTHON"]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "pandas" not in listed and "av==" not in listed.lower()
    done = run_check(python, tmp_path / "gpu_check.md")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    check_report((tmp_path / "gpu_check.md").read_text(), processes=False)
