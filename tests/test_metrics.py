"""Hand-computed cases for sevila_lib.metrics (spec §3.4, §2.6)."""
import math

import numpy as np
import pandas as pd
import pytest

from sevila_lib import metrics as M


def preds(rows, dataset="nextqa"):
    """rows: (question_type, prediction, answer) -> a predictions table."""
    return pd.DataFrame(
        [(f"q{i}", t, dataset, p, a) for i, (t, p, a) in enumerate(rows)],
        columns=["question_id", "question_type", "dataset", "prediction", "answer"],
    )


def test_accuracy_and_by_type():
    df = preds([("CW", 1, 1), ("CW", 0, 1), ("TN", 2, 2), ("DL", 3, 0)])
    assert M.accuracy(df) == 0.5
    assert M.accuracy_by_type(df).to_dict() == {"CW": 0.5, "DL": 0.0, "TN": 1.0}
    assert math.isnan(M.accuracy(df.iloc[:0]))


def test_nextqa_avg_is_overall_not_mean_of_groups():
    # T: 1/1, C: 1/3 (types CW, CH), D: 0/1 -> groups 100/33.3/0, mean 44.4; overall 2/5 = 40.
    df = preds([("TN", 0, 0), ("CW", 1, 1), ("CH", 0, 1), ("CW", 0, 2), ("DO", 0, 3)])
    g = M.nextqa_groups(df)
    assert g["nextqa_tem"] == 100 and g["nextqa_des"] == 0
    assert g["nextqa_cau"] == pytest.approx(100 / 3)
    assert g["nextqa_avg"] == pytest.approx(40.0)


def test_star_avg_is_unweighted_mean_of_types():
    # Interaction 2/2, Sequence 0/1, Prediction 1/1, Feasibility 1/4 -> mean(100, 0, 100, 25) = 56.25; overall 4/8.
    rows = [("Interaction", 0, 0)] * 2 + [("Sequence", 0, 1)] + [("Prediction", 1, 1)]
    rows += [("Feasibility", 0, 0)] + [("Feasibility", 1, 0)] * 3
    s = M.star_summary(preds(rows, "star"))
    assert s["star_int"] == 100 and s["star_fea"] == 25
    assert s["star_avg"] == pytest.approx(56.25)
    # Official fallback: with a type missing, Avg is the overall accuracy.
    assert M.star_summary(preds(rows[:4], "star"))["star_avg"] == pytest.approx(75.0)


def test_summarize_mixes_layouts():
    df = pd.concat([preds([("TN", 0, 0), ("CW", 1, 0)]), preds([("how2qa", 1, 1)], "how2qa"),
                    preds([("counting", 0, 1)], "world")])
    s = M.summarize(df)
    assert list(s.index[:4]) == ["nextqa_tem", "nextqa_cau", "nextqa_des", "nextqa_avg"]
    assert s["nextqa_avg"] == 50 and s["how2qa"] == 100 and s["world_counting"] == 0
    assert math.isnan(s["nextqa_des"]) and math.isnan(s["world_causal"])


def per_frame(votes, answers):
    """votes: {qid: [prediction per frame]} -> a per-frame table."""
    return pd.DataFrame([(q, i, p, answers[q]) for q, ps in votes.items() for i, p in enumerate(ps)],
                        columns=["question_id", "frame_index", "prediction", "answer"])


def test_vote_majority_and_ties():
    pf = per_frame({"a": [2, 2, 1, 0], "b": [3, 1, 1, 3], "c": [4, 0, 2, 1], "d": [1, 1, 1, 1]},
                   {"a": 2, "b": 3, "c": 0, "d": 0})
    v = M.vote(pf).set_index("question_id")
    assert v["prediction"].to_dict() == {"a": 2, "b": 1, "c": 0, "d": 1}  # ties -> lowest option index
    assert v.loc["a", "num_votes"] == 2 and v.loc["a", "num_frames"] == 4
    # Row order does not matter.
    assert M.vote(pf.sample(frac=1, random_state=0))["prediction"].tolist() == [2, 1, 0, 1]
    assert M.accuracy(M.vote(pf)) == 0.5  # a, c right; b (tie 1 vs 3), d wrong


def test_oracle_and_per_frame_accuracy():
    pf = per_frame({"a": [0, 1], "b": [2, 2], "c": [1, 1]}, {"a": 1, "b": 0, "c": 1})
    assert M.oracle_accuracy(pf) == pytest.approx(2 / 3)
    assert M.per_frame_accuracy(pf) == pytest.approx(3 / 6)


def test_keyframe_metrics():
    df = pd.DataFrame({
        "selected_frames": [[0, 1, 2, 3], [4, 5, 6, 7], [1, 2], [0, 1]],
        "relevant_frames": [[3, 4, 5, 6, 7, 8], [0], [2, 9], None],  # the last is unknown: skipped
    })
    assert M.keyframe_hit_rate(df) == pytest.approx(2 / 3)
    # recall: 1/min(4,6)=0.25, 0/min(4,1)=0, 1/min(2,2)=0.5 -> 0.25
    assert M.keyframe_recall(df) == pytest.approx(0.25)
    # precision: 1/4, 0/4, 1/2
    assert M.keyframe_precision(df) == pytest.approx((0.25 + 0 + 0.5) / 3)
    df2 = pd.DataFrame({"selected_frames": [np.array([3, 4])], "relevant_frames": [np.array([0, 1, 2, 3, 4, 5])]})
    assert M.keyframe_recall(df2) == 1.0


def test_merge_gap_six_merges_seven_splits():
    six = [0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0]  # yes at 1, 2, 9 with 6 "no" between
    assert M.merge_frame_predictions(six, frame_stride_seconds=2.0) == [(2.0, 20.0, pytest.approx(3 / 9))]
    seven = [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]  # yes at 1 and 9, 10 with 7 "no" between
    spans = M.merge_frame_predictions(seven, frame_stride_seconds=2.0)
    assert spans == [(18.0, 22.0, 1.0), (2.0, 4.0, 1.0)]  # equal score: the longer span first
    assert M.merge_frame_predictions([0, 0, 0]) == []


def test_merge_leading_trailing_scores_and_times():
    flags = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # leading and trailing yes, 8 "no" between
    scores = [0.9, 0.7, 0, 0, 0, 0, 0, 0, 0, 0, 0.6]
    spans = M.merge_frame_predictions(flags, scores=scores, frame_times=np.arange(11) * 0.5)
    assert spans == [(0.0, 1.0, pytest.approx(0.8)), (5.0, 5.5, pytest.approx(0.6))]
    one = M.merge_frame_predictions(flags, frame_stride_seconds=1.0, single_span=True)
    assert one == [(0.0, 11.0, pytest.approx(3 / 11))]
    assert M.merge_frame_predictions([1, 0, 1], max_gap=0) == [(0.0, 2.0, 1.0), (4.0, 6.0, 1.0)]


def test_temporal_iou():
    assert M.temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert M.temporal_iou((0, 10), (0, 10)) == 1.0
    assert M.temporal_iou((0, 10), (10, 20)) == 0.0
    assert M.temporal_iou((2, 4), (0, 10)) == pytest.approx(0.2)


def test_recall_at_1():
    gt = {"a": [(0, 10)], "b": [(0, 10), (20, 30)], "c": [(0, 10)], "d": []}
    pred = {
        "a": [(40, 50, 0.1), (0, 6, 0.9)],  # top span by score: IoU 0.6
        "b": [(20, 28, 0.8)],  # best gt is the second window: IoU 0.8
        "c": [],  # no prediction: miss
        "d": [(0, 1, 1.0)],  # no gt: skipped
    }
    assert M.recall_at_1(pred, gt, 0.5) == pytest.approx(2 / 3)
    assert M.recall_at_1(pred, gt, 0.7) == pytest.approx(1 / 3)
    assert M.recall_at_1([[(0, 10)]], [[(0, 10)]], 0.7) == 1.0  # sequences, unscored spans


def test_average_precision_hand_worked():
    gt = [(0, 10), (20, 30)]
    pred = [(0, 10, 0.9), (40, 50, 0.8), (20, 26.8, 0.7)]  # IoUs 1.0, 0, 0.68
    # IoU <= 0.65: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = .5*1 + .5*(2/3) = 5/6.
    assert M.average_precision(pred, gt, 0.5) == pytest.approx(5 / 6)
    # IoU >= 0.7: TP, FP, FP -> AP = 0.5.
    assert M.average_precision(pred, gt, 0.7) == pytest.approx(0.5)
    # 4 thresholds (0.5..0.65) at 5/6, 6 thresholds (0.7..0.95) at 0.5.
    assert M.mean_average_precision({"q": pred}, {"q": gt}) == pytest.approx((4 * 5 / 6 + 6 * 0.5) / 10)
    # Each gt matched at most once: a duplicate of a found moment is a false positive.
    assert M.average_precision([(0, 10, 0.9), (0, 10, 0.8)], [(0, 10)], 0.5) == pytest.approx(1.0)
    assert M.average_precision([(0, 10, 0.9), (0, 10, 0.8)], [(0, 10), (50, 60)], 0.5) == pytest.approx(0.5)
    # Ranking is by score, not by list order; a query with no prediction scores 0.
    assert M.average_precision([(40, 50, 0.1), (0, 10, 0.9)], [(0, 10)], 0.5) == 1.0
    assert M.mean_average_precision({"q": pred}, {"q": gt, "r": [(0, 5)]}) == pytest.approx(
        (4 * 5 / 6 + 6 * 0.5) / 20)


def test_bootstrap_deterministic_and_contains_estimate():
    rng = np.random.default_rng(1)
    answer = rng.integers(0, 5, 200)
    prediction = np.where(rng.random(200) < 0.7, answer, (answer + 1) % 5)
    df = pd.DataFrame({"question_id": [f"q{i}" for i in range(200)], "question_type": "TN",
                       "dataset": "nextqa", "prediction": prediction, "answer": answer})
    ci = M.bootstrap_ci(df, n_boot=300, seed=3)
    assert ci == M.bootstrap_ci(df, n_boot=300, seed=3)
    assert ci != M.bootstrap_ci(df, n_boot=300, seed=4)
    assert ci[0] < M.accuracy(df) < ci[1]
    assert 0.05 < ci[1] - ci[0] < 0.2  # ~ 4 standard errors of sqrt(.7*.3/200) = 0.032
    # Per-frame tables: all rows of a question are resampled together.
    pf = per_frame({f"q{i}": [i % 2, 1] for i in range(20)}, {f"q{i}": 1 for i in range(20)})
    lo, hi = M.bootstrap_ci(pf, M.oracle_accuracy, n_boot=50)
    assert lo == hi == 1.0


def test_paired_bootstrap_on_hand_made_tables():
    import pandas as pd

    from sevila_lib import metrics

    def table(correct, hits):
        return pd.DataFrame({"question_id": [f"q{i}" for i in range(len(correct))], "prediction": correct,
                             "answer": [1] * len(correct), "question_type": ["descriptive"] * len(correct),
                             "dataset": ["world"] * len(correct), "selected_frames": [[h] for h in hits],
                             "relevant_frames": [[1]] * len(correct)})

    base = table([1, 0, 0, 0] * 25, [0, 0, 0, 1] * 25)  # 25% right, 25% hit
    better = table([1, 1, 1, 0] * 25, [1, 1, 0, 1] * 25)  # 75% right, 75% hit
    d = metrics.paired_bootstrap(better, base)
    assert d["delta"] == pytest.approx(50.0) and d["low"] > 30 and d["holds"] and d["questions"] == 100
    assert metrics.paired_bootstrap(base, base)["delta"] == 0 and not metrics.paired_bootstrap(base, base)["holds"]
    assert metrics.paired_bootstrap(better, base, "hit_rate")["delta"] == pytest.approx(50.0)
    rows = metrics.compare_to_baseline({"uniform": base, "new": better}, "uniform")
    assert rows.loc[1, "Δaccuracy vs uniform"].startswith("+50.0 [") and rows.loc[0, "hit_rate"] == 25.0
