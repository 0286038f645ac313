"""Every path the kit uses, defined once (cookiecutter-data-science style)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = Path(os.environ.get("SEVILA_REPORTS_DIR", PROJECT_ROOT / "reports"))
# Generated, never committed: feature caches, training runs, world videos written as mp4.
CACHE_DIR = Path(os.environ.get("SEVILA_CACHE_DIR", PROJECT_ROOT / ".cache"))
# Where an interactive notebook run writes its tables and figures (only the batch runner writes REPORTS_DIR).
SCRATCH_DIR = CACHE_DIR / "scratch"

SAMPLE_VIDEOS_DIR = DATA_DIR / "sample_videos"  # small third-party clips with their licences
MINI_MODEL_DIR = DATA_DIR / "mini_blip2"  # the shipped mini BLIP-2 (safetensors + config + tokenizer)
MINI_CLIP_DIR = DATA_DIR / "mini_clip"  # the shipped mini CLIP (image-text similarity scorer, Table 6)
