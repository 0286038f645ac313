"""What the kit runs on: package versions, device, threads, git commit (`notebooks/00_setup.ipynb`)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess

import numpy as np
import pandas as pd
import torch

from . import paths

PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "numpy", "pandas", "av", "decord",
            "papermill", "seaborn", "sevila-kit")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs, and deterministic torch kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if not torch.backends.cuda.is_built() else "torch sees no GPU"
        raise ValueError(f"device {device!r} asked for, but {why}; use 'cpu' (or 'auto')")
    return torch.device(device)


def cpu_model() -> str:
    """The processor's name (float results can differ between CPU models, so reports record it)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report() -> pd.DataFrame:
    """One row per fact: platform, device, threads, package versions, the kit's git commit."""
    rows = {"python": platform.python_version(), "platform": platform.platform(), "cpu model": cpu_model(),
            "cpu cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    for name in PACKAGES:
        try:
            rows[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            rows[name] = "not installed"
    try:
        rows["git commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.PROJECT_ROOT,
                                            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rows["git commit"] = "unknown"
    return pd.DataFrame({"value": rows}).rename_axis("fact")
