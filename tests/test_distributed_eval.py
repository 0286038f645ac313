"""Evaluation sharded over processes by video gathers the same predictions table one process writes."""
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd

from sevila_lib.evaluation import shard_by_video
from sevila_lib.records import VideoQASample
from sevila_lib.paths import PROJECT_ROOT


def test_shards_hold_whole_videos_once():
    samples = [VideoQASample(f"q{i}", f"v{i % 5}", "q?", ["a", "b"], 0) for i in range(17)]
    shards = [shard_by_video(samples, p, 3) for p in range(3)]
    assert sorted(s.question_id for shard in shards for s in shard) == sorted(s.question_id for s in samples)
    owners = [{s.video for s in shard} for shard in shards]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])  # a video lives in one shard


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_table_one_process_writes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "SEVILA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("WORLD_SIZE", None)
    args = ["-m", "sevila_lib.evaluation", "--profile", "mini", "--max-questions", "12", "--num-frames", "8",
            "--keyframes", "2", "--rule", "aks"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.parquet"),
                          "--cache-dir", str(tmp_path / "c1")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_port()), *args, "--out", str(tmp_path / "two.parquet"),
                          "--cache-dir", str(tmp_path / "c2")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "(2 processes)" in two.stdout
    a, b = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    assert a.question_id.tolist() == b.question_id.tolist() and len(a) == 12
    assert a.selected_frames.map(list).tolist() == b.selected_frames.map(list).tolist()
    assert a.prediction.tolist() == b.prediction.tolist()
    np.testing.assert_allclose(np.stack(a.option_probs.map(list)), np.stack(b.option_probs.map(list)), atol=1e-5)
    # each process encoded its own videos: the two caches together hold each video once
    files = list((tmp_path / "c2").rglob("*.safetensors"))
    assert len(files) == len(set(f.name for f in files)) == len(list((tmp_path / "c1").rglob("*.safetensors")))
