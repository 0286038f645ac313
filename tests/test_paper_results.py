"""The kit's versions of paper Tables 1/2, 4, 12 and 15 (`sevila_lib.paper_results`), on hand-computable cases."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sevila_lib import paper_results as pr
from sevila_lib import paths
from sevila_lib.chain import FrameBatch, Questions
from sevila_lib.evaluation import Evaluator
from sevila_lib.gpu_check import Check, render
from sevila_lib.records import VideoQASample
from sevila_lib.scorers import LocalizerScorer
from tests.conftest import QUESTIONS, make_tiny_model
from tests.test_evaluation import ArrayReader

ANSWERER = "BLIP-2^concat (Answerer) (4)"

torch.set_num_threads(1)


def predictions(correct: dict[str, list[bool]], dataset: str = "world") -> pd.DataFrame:
    """A predictions table: per question type, one row per flag (answer 0; prediction 0 when correct)."""
    rows = [dict(question_id=f"{kind}{i}", question_type=kind, dataset=dataset, answer=0, prediction=0 if ok else 1)
            for kind, flags in correct.items() for i, ok in enumerate(flags)]
    return pd.DataFrame(rows)


def test_main_results_accuracy_difference_and_paper_rows():
    answerer = predictions({"descriptive": [True, False], "temporal": [False, False], "causal": [True, True],
                            "counting": [False, True]})  # 4 of 8 right
    sevila = predictions({"descriptive": [True, True], "temporal": [True, False], "causal": [True, True],
                          "counting": [False, True]})  # 6 of 8: the two changed questions both turn right
    table = pr.main_results({ANSWERER: answerer, "SeViLA† (32→4)": sevila, "mine": sevila}, n_boot=200)
    assert list(table.setting) == [ANSWERER, "SeViLA† (32→4)", "mine"]
    row = table.set_index("setting").loc["SeViLA† (32→4)"]
    assert row.world_descriptive == 100 and row.world_temporal == 50 and row.world_avg == 75
    assert row["Δ vs Answerer"] == 25 and table.attrs["baseline"] == ANSWERER  # paired: +2 questions of 8
    assert 0 <= row["Δ low"] <= 25 <= row["Δ high"] <= 100  # no question turns wrong: never below 0
    assert np.isnan(table.set_index("setting").loc[ANSWERER, "Δ low"])
    assert row["nextqa_avg (paper)"] == 63.6  # Table 2's SeViLA†
    assert np.isnan(table.set_index("setting").loc["mine", "nextqa_avg (paper)"])  # not a paper row
    finetuned = pr.main_results({ANSWERER: answerer}, finetuned=True)
    assert finetuned["nextqa_avg (paper)"].item() == 72.6  # Table 1's Answerer


def test_main_results_on_a_paper_dataset_shows_the_same_columns_of_the_paper():
    table = predictions({"CW": [True, False], "TN": [True, True], "DL": [False, False]}, dataset="nextqa")
    out = pr.main_results({ANSWERER: table})
    assert out.nextqa_cau.item() == 50 and out.nextqa_tem.item() == 100 and out.nextqa_des.item() == 0
    assert out.nextqa_avg.item() == 50
    assert out["nextqa_avg (paper)"].item() == 62.4 and "star_avg (paper)" not in out
    with pytest.raises(KeyError):
        pr.main_results({"other": table})
    assert pr.main_results({"A": table, "B": table}, baseline="B")["Δ vs Answerer"].tolist()[0] == 0


def test_spans_in_seconds_cover_whole_frames():
    assert pr.frame_spans([3, 1, 2, 7], fps=2.0) == [(0.5, 2.0), (3.5, 4.0)]
    # The world's moment [1.0, 1.5] (frames 2 and 3 at 2 fps, ends included) covers [1.0, 2.0).
    sample = VideoQASample("m", "v", "a red circle appears", [], None, dataset="qvh", moments=[(1.0, 1.5)])
    assert pr.ground_truth_windows(sample, num_video_frames=12, fps=2.0) == [(1.0, 2.0)]
    # Frames 2-4 say yes (P >= 0.5): one span [1.0, 2.5) scored by their mean P(yes).
    spans = pr.localizer_windows([0.1, 0.2, 0.9, 0.6, 0.9, 0.0], range(6), fps=2.0)
    assert spans == [(1.0, 2.5, pytest.approx(0.8))]
    # No frame says yes: the most probable frame alone, so the official evaluator has a window to score.
    assert pr.localizer_windows([0.1, 0.3, 0.2], range(3), fps=1.0) == [(1.0, 2.0, 0.3)]


@pytest.fixture()
def moment_workspace(tokenizer, monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    rng = np.random.default_rng(0)
    reader = ArrayReader({"v": rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8)}, fps=2.0)
    # Relevant frames 0-7 of 12: [0, 4) s of a 6-s video, so the whole video has IoU 4/6.
    samples = [VideoQASample(f"m{i}", "v", "a red circle appears", [], None, "QVHighlight", "qvh",
                             moments=[(0.0, 3.5)]) for i in range(2)]
    return SimpleNamespace(world=object(), moment_reader=reader, profile="test", moments={"val": samples})


def test_moment_retrieval_scores_the_localizer_and_the_baselines(moment_workspace, tokenizer):
    table = pr.moment_retrieval(moment_workspace, {"Localizer": make_tiny_model(tokenizer)}, num_frames=12)
    rows = table.set_index("model")
    assert list(rows.index) == ["Localizer", "whole video (no localisation)", "ground-truth frames (span rule)"]
    assert rows.loc["ground-truth frames (span rule)", ["R1@0.5", "R1@0.7", "mAP"]].tolist() == [100, 100, 100]
    # IoU 2/3: a hit at 0.5 to 0.65 (4 of the 10 thresholds), a miss from 0.7.
    assert rows.loc["whole video (no localisation)", ["R1@0.5", "R1@0.7", "mAP"]].tolist() == [100, 0, 40]
    assert 0 <= rows.loc["Localizer", "mAP"] <= 100 and rows.loc["Localizer", "queries"] == 2
    assert rows.loc["Localizer", "R1@0.5 (paper)"] == 54.5
    assert np.isnan(rows.loc["whole video (no localisation)", "mAP (paper)"])


@pytest.fixture()
def qa_evaluator(tokenizer):
    rng = np.random.default_rng(0)
    reader = ArrayReader({v: rng.integers(0, 255, (16, 20, 20, 3), dtype=np.uint8) for v in ("v1", "v2")})
    samples = [VideoQASample(f"q{i}", v, q, o, answer=i % 2, question_type="descriptive", dataset="world",
                             moments=[(1.0, 2.0)]) for i, (v, (q, o)) in enumerate(zip(["v1", "v2"] * 2, QUESTIONS * 2))]
    return Evaluator(make_tiny_model(tokenizer), samples, reader, progress=False)


def test_a_multi_frame_image_of_one_frame_is_the_single_frame_localizer(qa_evaluator):
    ev = qa_evaluator
    indices = [ev.frame_indices(s, 8) for s in ev.samples]
    batch = FrameBatch(ev.model, ev._stack(ev.samples, indices), Questions.from_samples(ev.samples), indices)
    single = LocalizerScorer()(batch)
    assert torch.equal(pr.MultiFrameLocalizerScorer(1)(batch), single)
    grouped = pr.MultiFrameLocalizerScorer(4)(batch)
    assert grouped.shape == single.shape == (4, 8)
    assert torch.equal(grouped[:, ::4].repeat_interleave(4, 1), grouped)  # one score per group of 4
    assert not torch.allclose(grouped, single)
    with pytest.raises(ValueError):
        pr.MultiFrameLocalizerScorer(3)(batch)


def test_localizer_frames_table_compares_single_and_multi_frame(qa_evaluator):
    table = pr.localizer_frames(qa_evaluator, frames_per_image=4, num_frames=8, num_keyframes=4, n_boot=100)
    assert table.localizer_frames.tolist() == [1, 4] and table.answerer.tolist() == ["zero-shot"] * 2
    assert table["nextqa_avg (paper)"].tolist() == [64.6, 63.6]
    multi = qa_evaluator.select(pr.MultiFrameLocalizerScorer(4), "top_k", 8, 4)
    for sampled, selected in zip(multi.sampled_frames, multi.selected_frames):  # one whole group of 4
        assert list(selected) in [list(sampled[:4]), list(sampled[4:])]
    assert table["Δ vs single-frame"].iloc[1] == pytest.approx(table.world_avg.iloc[1] - table.world_avg.iloc[0])


def test_compute_cost_times_memory_and_parameters(qa_evaluator):
    table = pr.compute_cost(qa_evaluator, questions=2, num_frames=8, num_keyframes=4, repeats=2)
    assert table.model.tolist() == ["SeViLA (8→4)", "Answerer (4)"]
    assert (table.seconds_per_question > 0).all() and (table.memory_gb > 0).all()
    assert table.attrs["time_ratio"] == pytest.approx(table.seconds_per_question[0] / table.seconds_per_question[1])
    assert table.attrs["paper_time_ratio"] == pytest.approx(3.28 / 1.79)
    model = qa_evaluator.model
    localizer = sum(p.numel() for p in model.localizer.parameters()) / 1e6
    assert table.parameters_million[0] - table.parameters_million[1] == pytest.approx(localizer)
    assert table.trainable_million[0] == pytest.approx(2 * table.trainable_million[1])  # two equal bridges


def test_recorded_cost_reads_the_gpu_check_report(tmp_path):
    assert pr.recorded_cost(tmp_path).empty
    check = Check("cpu", "tiny")
    check.add("inference", "SeViLA (32→4)", 1, 0.5, 1.25, 3.28, 7.98)
    check.add("inference", "Answerer (4)", 1, 0.25, 1.0, 1.79, 7.56)
    (tmp_path / "gpu_check.md").write_text(render(check, ["test"], 0.1, {"ViT": 1000}))
    rows = pr.recorded_cost(tmp_path)
    assert rows.model.tolist() == ["SeViLA (32→4)", "Answerer (4)"]
    assert rows.seconds_per_question.tolist() == [0.5, 0.25] and rows.memory_gb.tolist() == [1.25, 1.0]
    assert rows.source.iloc[0] == "gpu_check.md: GPU check (tiny)" and rows.memory_kind.iloc[0] == "peak RSS (GB)"
