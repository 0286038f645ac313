"""Decoding speed: PyAV decode-through vs PyAV seeking vs decord, on the sample clips (spec §3.2).

Two access patterns, both with 32 frames picked by `segment_frame_indices` (eval mode):
  whole  - 32 frames spread over the whole clip (NExT-QA, QVHighlights: no window);
  window - 32 frames from a window over the last fifth of the clip (STAR/How2QA/TVQA/VLEP have windows).
Each reader opens the file afresh every call, as a data loader does. Prints frames/s (best of
`--repeats` calls) and ratios to PyAV decode-through.

    .venv/bin/python benchmarks/bench_decode.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from sevila_lib.paths import SAMPLE_VIDEOS_DIR
from sevila_lib.video import (probe_video, read_frames_decord, read_frames_pyav,
                              segment_frame_indices)

READERS = {
    "pyav-through": lambda path, idx: read_frames_pyav(path, idx, seek=False),
    "pyav-seek": lambda path, idx: read_frames_pyav(path, idx, seek=True),
    "decord": read_frames_decord,
}


def frames_per_second(read, path: str, indices: list[int], repeats: int) -> float:
    """Best of `repeats` timed calls: the minimum is the least disturbed by other processes."""
    read(path, indices)  # warm-up: file cache, codec initialisation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        read(path, indices)
        best = min(best, time.perf_counter() - start)
    return len(indices) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--num-frames", type=int, default=32)
    args = parser.parse_args()
    print(f"{'clip':24s} {'pattern':7s} " + " ".join(f"{name:>13s}" for name in READERS)
          + "   seek/through  decord/through")
    for path in sorted(Path(SAMPLE_VIDEOS_DIR).glob("*.mp4")):
        info = probe_video(str(path))
        duration = info.num_frames / info.fps
        windows = {"whole": (None, None), "window": (0.8 * duration, duration)}
        for pattern, (start, end) in windows.items():
            indices, _ = segment_frame_indices(info.num_frames, info.fps, args.num_frames, "uniform",
                                               start=start, end=end)
            speed = {name: frames_per_second(read, str(path), indices, args.repeats)
                     for name, read in READERS.items()}
            print(f"{path.name:24s} {pattern:7s} " + " ".join(f"{speed[n]:9.0f} f/s" for n in READERS)
                  + f"   {speed['pyav-seek'] / speed['pyav-through']:12.2f}"
                  + f"  {speed['decord'] / speed['pyav-through']:14.2f}")


if __name__ == "__main__":
    main()
