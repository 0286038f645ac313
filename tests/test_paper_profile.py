"""The GPU user's path, on CPU: every notebook under `--profile paper --smoke`, as README tells GPU users.

Inputs are laid out as a real download would be, but small:
* the real clips of `data/sample_videos`, under a `videos/<folder>/<id>.mp4` tree like NExT-QA's VidOR videos;
* NExT-QA release CSVs (`video,frame_count,width,height,question,answer,qid,type,a0..a4`) plus
  `map_vid_vidorID.json`, and a QVHighlights `highlight_train_release.jsonl` for localizer pre-training;
* a tiny random BLIP-2 written by transformers' `save_pretrained` layout (config.json + model.safetensors +
  tokenizer files, as `Salesforce/blip2-flan-t5-xl` is laid out) and a LAVIS-layout `.pth`
  (`{"model": state dict}` with `Qformer_loc.*` keys, as `sevila_pretrained.pth`).
The command is `python -m sevila_lib.notebooks run --profile paper --smoke -p device=cpu -p ...`.
"""
import csv
import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import torch

from sevila_lib import checkpoints, notebooks, paths
from conftest import make_tiny_model

# QA on the two small clips (cheap to decode); all three clips, bikes.mp4 too, in the moment queries.
CLIPS = {"9000000002": ("carphone_pristine", 120, 176, 144), "9000000003": ("carphone_distorted", 120, 176, 144)}
MOMENT_CLIPS = [("bikes", 250, 25.0), ("carphone_pristine", 120, 29.97), ("carphone_distorted", 120, 29.97)]
QUESTIONS = [("why do the riders lean forward", "CW", ["to read a sign", "to go faster", "to pick up a bag",
                                                        "because it rains", "to wave at a friend"], 1),
             ("what happens after the first rider passes", "TN", ["the road ends", "a dog barks", "nothing moves",
                                                                   "a second rider follows", "the light turns red"], 3),
             ("how many people are in the car", "DC", ["one", "two", "three", "four", "five"], 0)]


def write_nextqa_csv(path, offset: int = 0):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["video", "frame_count", "width", "height", "question", "answer", "qid", "type",
                      "a0", "a1", "a2", "a3", "a4"])
        for i, (video, (_, frames, width, height)) in enumerate(CLIPS.items()):
            for j, (question, qtype, options, answer) in enumerate(QUESTIONS):
                out.writerow([video, frames, width, height, question, (answer + i) % 5, offset + j, qtype, *options])


def make_paper_inputs(root, tokenizer):
    videos = root / "videos" / "1104"
    videos.mkdir(parents=True)
    for name, *_ in MOMENT_CLIPS:
        (videos / f"{name}.mp4").symlink_to(paths.SAMPLE_VIDEOS_DIR / f"{name}.mp4")
    (root / "map_vid_vidorID.json").write_text(json.dumps({v: f"1104/{name}" for v, (name, *_) in CLIPS.items()}))
    write_nextqa_csv(root / "train.csv")
    write_nextqa_csv(root / "val.csv", offset=10)
    with open(root / "highlight_train_release.jsonl", "w") as f:
        for qid, (name, frames, fps) in enumerate(MOMENT_CLIPS):
            duration = frames / fps
            f.write(json.dumps({"qid": qid, "query": "someone rides past", "duration": duration, "vid": f"1104/{name}",
                                "relevant_windows": [[0, round(duration / 2, 1)]]}) + "\n")
    model = make_tiny_model(tokenizer)
    checkpoints.save_hf_blip2(model, root / "blip2")
    torch.manual_seed(7)
    for p in model.localizer.parameters():  # a Localizer† different from BLIP-2's Q-Former, as the real file
        p.data.add_(0.01 * torch.randn_like(p))
    torch.save({"model": checkpoints.kit_to_lavis(model, include_frozen=False)}, root / "sevila_pretrained.pth")


def test_paper_profile_runs_every_notebook_on_real_files(tmp_path, tokenizer):
    make_paper_inputs(tmp_path, tokenizer)
    reports = tmp_path / "reports"
    params = dict(device="cpu", dataset="nextqa", train_annotations=tmp_path / "train.csv",
                  val_annotations=tmp_path / "val.csv", map_path=tmp_path / "map_vid_vidorID.json",
                  video_root=tmp_path / "videos", moment_annotations=tmp_path / "highlight_train_release.jsonl",
                  moment_video_root=tmp_path / "videos", blip2=tmp_path / "blip2",
                  checkpoint=tmp_path / "sevila_pretrained.pth")
    command = [sys.executable, "-m", "sevila_lib.notebooks", "run", "--profile", "paper", "--smoke",
               "--reports-dir", str(reports)]
    for name, value in params.items():
        command += ["-p", f"{name}={value}"]
    # The kernel runs in notebooks/: put this checkout first on its path (a relative PYTHONPATH would not be).
    env = {**os.environ, "SEVILA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(paths.PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=paths.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    executed = sorted(reports.glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in executed] == [p.stem for p in notebooks.notebook_paths()]
    for path in executed:
        nb = nbformat.read(path, 4)
        assert nb.metadata["papermill"]["parameters"]["shared"]["profile"] == "paper"
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    setup = "".join(o.get("text", "") for c in nbformat.read(reports / "00_setup.ipynb", 4).cells
                    for o in c.get("outputs", []))
    assert "sevila_pretrained.pth" in setup and "unexpected 0" in setup  # the LAVIS file loaded by key mapping
    chain = pd.read_csv(reports / "tables" / "01_forward_chain.csv")
    assert {"nextqa_avg", "setting"} <= set(chain.columns) and len(chain) == 4  # uniform, all, localizer, voting
    predictions = pd.read_parquet(reports / "predictions" / "01_localizer.parquet")
    assert len(predictions) == min(len(CLIPS) * len(QUESTIONS), notebooks.SMOKE["max_questions"])
    for table in ("02_table3_ablation", "02_table5_localizer", "03_frames_grid", "04_prompts", "05_threshold",
                  "06_table3", "08_table2_zero_shot", "08_table15_cost"):
        assert len(pd.read_csv(reports / "tables" / f"{table}.csv")) > 0, table
