"""`sevila_lib.ask` and `python -m sevila_lib ask` on the sample clips with the shipped mini BLIP-2."""
import os
import subprocess
import sys

import pytest
import torch

import sevila_lib
from sevila_lib import paths


def test_ask_command_from_the_repository(tmp_path):
    figure = tmp_path / "keyframes.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sevila_lib", "ask", "data/sample_videos/bikes.mp4",
                           "--question", "what is moving?", "--options", "a bike", "a car", "a dog",
                           "--figure", str(figure)], cwd=paths.PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("s ") >= 32 and "keyframes: [" in out and "answer: " in out  # 32 frames with times and scores
    assert out.count("\n*") == 4 and "A: a bike" in out and "mini BLIP-2" in out
    assert figure.stat().st_size > 10_000


def test_ask_in_python_says_which_words_the_mini_tokenizer_lacks(tmp_path):
    result = sevila_lib.ask(paths.SAMPLE_VIDEOS_DIR / "carphone_distorted.mp4", "is the café's sign 日本?",
                            ["yes", "no"], num_frames=8, num_keyframes=2, figure=tmp_path / "f.png")
    assert len(result.frame_indices) == len(result.frame_scores) == 8 and len(result.keyframes) == 2
    assert set(result.keyframes) <= set(result.frame_indices) and result.keyframes == sorted(result.keyframes)
    assert abs(sum(result.option_probs) - 1) < 1e-5 and result.answer_text in ("yes", "no")
    assert any("<unk>" in note and "café's" in note for note in result.notes)
    assert (tmp_path / "f.png").exists()


def test_ask_rejects_bad_requests():
    with pytest.raises(ValueError, match="2 to 5 options"):
        sevila_lib.ask(paths.SAMPLE_VIDEOS_DIR / "bikes.mp4", "q?", ["only one"])
    with pytest.raises(FileNotFoundError):
        sevila_lib.ask("no/such/video.mp4", "q?", ["a", "b"])
    with pytest.raises(ValueError, match=r"README\.md: not a video format the kit reads \(\.mp4"):
        sevila_lib.ask(paths.PROJECT_ROOT / "README.md", "q?", ["a", "b"])
    with pytest.raises(FileNotFoundError, match="no BLIP-2 folder at /no/such/dir"):
        sevila_lib.ask(paths.SAMPLE_VIDEOS_DIR / "bikes.mp4", "q?", ["a", "b"], blip2="/no/such/dir")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' asked for, but"):
            sevila_lib.ask(paths.SAMPLE_VIDEOS_DIR / "bikes.mp4", "q?", ["a", "b"], device="cuda")


def test_the_ask_module_is_callable_like_the_function(tmp_path):
    import importlib

    module = importlib.import_module("sevila_lib.ask")  # what `import sevila_lib.ask` binds sevila_lib.ask to
    result = module(paths.SAMPLE_VIDEOS_DIR / "bikes.mp4", "what is moving?", ["a bike", "a car"], num_frames=4,
                    num_keyframes=2)
    assert type(result).__name__ == "AskResult" and len(result.frame_indices) == 4
