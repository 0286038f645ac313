"""Hand-computed cases for sevila_lib.metrics (official `vqa.py`; official `blip2_fmr.py`)."""
import json
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


def test_recall_at_1_takes_the_first_listed_window_not_the_best_scored():
    gt = {"a": [(0, 10)], "b": [(0, 10), (20, 30)], "c": [(0, 10)]}
    pred = {
        "a": [(0, 6, 0.1), (40, 50, 0.9)],  # first listed: IoU 0.6 (the higher score does not matter)
        "b": [(20, 28, 0.8)],  # gt window it overlaps most is the second: IoU 0.8
        "c": [(40, 50, 0.9), (0, 10, 1.0)],  # first listed misses; the perfect second window is not looked at
    }
    assert M.recall_at_1(pred, gt, 0.5) == pytest.approx(2 / 3)
    assert M.recall_at_1(pred, gt, 0.7) == pytest.approx(1 / 3)
    assert M.recall_at_1([[(0, 10)]], [[(0, 10)]], 0.7) == 1.0  # sequences, unscored spans
    # IoU equal to the threshold is a hit (official `>=`): 7/10 = 0.7, 5/10 = 0.5.
    assert M.recall_at_1([[(0, 7, 0.3)], [(0, 5, 0.3)]], [[(0, 10)], [(0, 10)]], 0.7) == 0.5
    assert M.recall_at_1([[(0, 5, 0.3)]], [[(0, 10)]], 0.5) == 1.0


def test_empty_predictions_missing_queries_and_missing_gt_raise_naming_the_query():
    with pytest.raises(ValueError, match="query c: empty list of predicted windows"):
        M.recall_at_1({"a": [(0, 1, 1.0)], "c": []}, {"a": [(0, 1)], "c": [(0, 10)]})
    with pytest.raises(ValueError, match="query c: empty list"):
        M.mean_average_precision({"a": [(0, 1, 1.0)], "c": []}, {"a": [(0, 1)], "c": [(0, 10)]})
    with pytest.raises(ValueError, match=r"no prediction for \['c'\]"):
        M.mean_average_precision({"a": [(0, 1, 1.0)]}, {"a": [(0, 1)], "c": [(0, 10)]})
    with pytest.raises(ValueError, match=r"not in the ground truth: \['z'\]"):
        M.recall_at_1({"a": [(0, 1, 1.0)], "z": [(0, 1, 1.0)]}, {"a": [(0, 1)]})
    with pytest.raises(ValueError, match="query d: no ground-truth window"):
        M.recall_at_1({"d": [(0, 1, 1.0)]}, {"d": []})


def test_average_precision_hand_worked():
    gt = [(0, 10), (20, 30)]
    pred = [(0, 10, 0.9), (40, 50, 0.8), (20, 26.8, 0.7)]  # IoUs 1.0, 0, 0.68
    # IoU <= 0.65: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = .5*1 + .5*(2/3) = 5/6.
    assert M.average_precision(pred, gt, 0.5) == pytest.approx(5 / 6)
    # IoU >= 0.7: TP, FP, FP -> AP = 0.5.
    assert M.average_precision(pred, gt, 0.7) == pytest.approx(0.5)
    # 4 thresholds (0.5..0.65) at 5/6, 6 thresholds (0.7..0.95) at 0.5.
    assert M.mean_average_precision({"q": pred}, {"q": gt}) == pytest.approx((4 * 5 / 6 + 6 * 0.5) / 10)
    per = M.mean_average_precision_per_threshold({"q": pred}, {"q": gt})
    assert per[0.65] == pytest.approx(5 / 6) and per[0.7] == pytest.approx(0.5)
    # Each gt matched at most once: a duplicate of a found moment is a false positive.
    assert M.average_precision([(0, 10, 0.9), (0, 10, 0.8)], [(0, 10)], 0.5) == pytest.approx(1.0)
    assert M.average_precision([(0, 10, 0.9), (0, 10, 0.8)], [(0, 10), (50, 60)], 0.5) == pytest.approx(0.5)
    # Within the kept windows, ranking is by score, not by list order.
    assert M.average_precision([(40, 50, 0.1), (0, 10, 0.9)], [(0, 10)], 0.5) == 1.0
    # IoU equal to the threshold is a true positive.
    assert M.average_precision([(0, 5, 0.9)], [(0, 10)], 0.5) == 1.0


def test_map_keeps_the_first_10_listed_windows_then_ranks_them_official_rules():
    gt = {"q": [(0, 10)]}
    # 10 misses listed first, then a perfect window with the best score: it is cut before ranking -> AP 0.
    late_hit = [(20, 30, 0.1)] * 10 + [(0, 10, 0.9)]
    assert M.mean_average_precision({"q": late_hit}, gt) == 0.0
    assert M.mean_average_precision({"q": late_hit}, gt, max_predictions=None) == 1.0
    # Equal scores keep list order (stable sort): FP then TP -> precision 1/2 at recall 1 -> AP 0.5.
    assert M.average_precision([(20, 30, 0.5), (0, 10, 0.5)], [(0, 10)], 0.5) == 0.5
    assert M.average_precision([(0, 10, 0.5), (20, 30, 0.5)], [(0, 10)], 0.5) == 1.0
    # Equal IoUs with two gt windows: the official order tries the LATER gt window first. (5, 10) has IoU 0.5
    # with both and takes (5, 15); (10, 15) then finds (5, 15) taken and (0, 10) at IoU 0 -> FP. AP = 0.5.
    assert M.average_precision([(5, 10, 0.9), (10, 15, 0.8)], [(0, 10), (5, 15)], 0.5) == 0.5


def test_merged_spans_are_listed_in_rank_order_for_the_official_rules():
    flags = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]  # a 1-frame span, then (7 "no") a 3-frame span
    scores = [0.2, 0, 0, 0, 0, 0, 0, 0, 0.9, 0.8, 0.7]
    spans = M.merge_frame_predictions(flags, scores=scores, frame_stride_seconds=2.0)
    assert spans == [(16.0, 22.0, pytest.approx(0.8)), (0.0, 2.0, pytest.approx(0.2))]
    rows = M.qvh_submission_rows({"7": spans})
    assert rows == [{"qid": 7, "pred_relevant_windows": [[16.0, 22.0, pytest.approx(0.8)], [0.0, 2.0, 0.2]]}]
    # R1 reads the first listed span, which is the best-ranked one.
    assert M.recall_at_1({"7": spans}, {"7": [(16, 22)]}, 0.7) == 1.0


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_command_line_prints_the_official_numbers(tmp_path, capsys):
    # Two queries. q1: first listed window (0, 7) IoU 0.7 with (0, 10); its second window (20, 30) is exact but
    #   listed later with a lower score. q2: first listed (50, 60) misses; its second (40, 46) has IoU 0.6.
    # R1@0.5 = 1/2 (q1), R1@0.7 = 1/2 (q1, IoU equal to 0.7).
    # q1 AP: ranked (0,7) .9, (20,30) .5; gt (0,10), (20,30). thr <= .7: TP, TP -> 1; thr > .7: FP, TP ->
    #   precision 1/2 at recall 1/2 -> 1/4. q2 AP: ranked (40,46) .8, (50,60) .6; gt (40,50). thr <= .6: TP -> 1;
    #   thr > .6: 0. mAP@0.5 = (1 + 1) / 2 = 100 %, mAP@0.75 = (1/4 + 0) / 2 = 12.5 %; per threshold
    #   .5 .55 .6 -> 1, .65 .7 -> 1/2, .75 ... .95 -> 1/8: average = (3 + 1 + 5/8) / 10 = 46.25 %.
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"qid": 1, "query": "x", "vid": "v_0_150", "pred_relevant_windows": [[0, 7, 0.9], [20, 30, 0.5]]},
        {"qid": 2, "query": "y", "vid": "w_0_150", "pred_relevant_windows": [[50, 60, 0.6], [40, 46, 0.8]]}])
    gt = write_jsonl(tmp_path / "highlight_val_release.jsonl", [
        {"qid": 1, "query": "x", "duration": 150, "vid": "v_0_150", "relevant_windows": [[0, 10], [20, 30]]},
        {"qid": 2, "query": "y", "duration": 150, "vid": "w_0_150", "relevant_windows": [[40, 50]]}])
    assert M.main(["qvh", str(pred), str(gt)]) == 0
    out = capsys.readouterr().out.split()
    assert dict(zip(out[::2], map(float, out[1::2]))) == {"R1@0.5": 50.0, "R1@0.7": 50.0, "mAP@0.5": 100.0,
                                                          "mAP@0.75": 12.5, "mAP": 46.25}
    empty = write_jsonl(tmp_path / "empty.jsonl", [
        {"qid": 1, "pred_relevant_windows": [[0, 7, 0.9]]}, {"qid": 2, "pred_relevant_windows": []}])
    assert M.main(["qvh", str(empty), str(gt)]) == 1
    assert "query 2: empty list of predicted windows" in capsys.readouterr().err
    unscored = write_jsonl(tmp_path / "unscored.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 7]]}])
    assert M.main(["qvh", str(unscored), str(gt)]) == 1
    assert "line 1 (qid 1): 'pred_relevant_windows' must be a list of [start, end, score]" in capsys.readouterr().err
    # json reads NaN and Infinity: a NaN score would rank windows arbitrarily, so the file is refused, naming it
    (tmp_path / "nan.jsonl").write_text('{"qid": 1, "pred_relevant_windows": [[0, 7, NaN]]}\n'
                                        '{"qid": 2, "pred_relevant_windows": [[40, 46, 0.8]]}\n')
    assert M.main(["qvh", str(tmp_path / "nan.jsonl"), str(gt)]) == 1
    assert "nan.jsonl, line 1 (qid 1): 'pred_relevant_windows' holds a window with a value that is not a finite " \
           "number: [0, 7, nan]" in capsys.readouterr().err


@pytest.mark.parametrize("windows, why", [([[20, 10]], "relevant window [20.0, 10.0] ends before it starts"),
                                          ([[-10, 20]], "relevant window [-10.0, 20.0] starts before 0"),
                                          ([[0, 10, 1]], "'relevant_windows' must be a list of [start, end]")])
def test_ground_truth_windows_that_would_change_the_numbers_are_refused(tmp_path, capsys, windows, why):
    # A reversed window as ground truth moved mAP from 72.5 to 22.5 when it was accepted.
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 7, 0.9]]}])
    gt = write_jsonl(tmp_path / "gt.jsonl", [{"qid": 0, "relevant_windows": [[0, 5]]},
                                             {"qid": 1, "relevant_windows": windows}])
    assert M.main(["qvh", str(pred), str(gt)]) == 1
    assert f"gt.jsonl, line 2 (qid 1): {why}" in capsys.readouterr().err


def test_files_that_are_not_ground_truth_are_named(tmp_path, capsys):
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 7, 0.9]]}])
    assert M.main(["qvh", str(pred), str(pred)]) == 1  # a submission given as ground truth
    assert "pred.jsonl, line 1 (qid 1): no 'relevant_windows' (1 of 1 records): it is a submission" \
        in capsys.readouterr().err
    test = write_jsonl(tmp_path / "highlight_test_release.jsonl", [{"qid": 1, "query": "x", "vid": "v_0_150"}])
    assert M.main(["qvh", str(pred), str(test)]) == 1
    assert "the test split's file has none" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert M.main(["qvh", str(tmp_path / "empty.jsonl"), str(test)]) == 1
    assert "empty.jsonl: no records (an empty file)" in capsys.readouterr().err
    (tmp_path / "latin1.jsonl").write_bytes(b'{"qid": 1, "query": "caf\xe9", "pred_relevant_windows": [[0, 7, 1]]}\n')
    assert M.main(["qvh", str(tmp_path / "latin1.jsonl"), str(test)]) == 1
    assert "latin1.jsonl, line 1: not UTF-8 text" in capsys.readouterr().err


def test_accuracy_refuses_questions_without_a_gold_answer():
    table = pd.DataFrame({"question_id": ["a", "b", "c"], "prediction": [0, 1, 2], "answer": [0, None, None],
                          "question_type": "TN", "dataset": "tvqa"})
    with pytest.raises(ValueError, match=r"2 question\(s\) without a gold answer \(a test split\?\): b, c"):
        M.accuracy(table)
    assert M.accuracy(table.iloc[:1]) == 1.0


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


def test_seed_means_carry_a_t_interval_and_one_seed_says_so():
    assert M.mean_and_ci([60.0]) == "60.0 (1 seed)"
    # mean 61, sample sd 1, t(2) = 4.303: half-width 4.303 / sqrt(3) = 2.48
    assert M.mean_and_ci([60.0, 61.0, 62.0]) == "61.0 ± 2.5"
    assert abs(M.t_quantile_975(30) - 2.042) < 1e-3 and M.t_quantile_975(2) == 4.303


def test_paired_bootstrap_pools_seeds_and_only_holds_when_the_ci_excludes_zero():
    ids = [f"q{i}" for i in range(200)]
    better = pd.Series([1.0] * 120 + [0.0] * 80, index=ids)
    worse = pd.Series([1.0] * 100 + [0.0] * 100, index=ids)
    d = M.paired_bootstrap_over_seeds([(better, worse), (better, worse)])
    assert d["delta"] == 10.0 and d["seeds"] == 2 and d["questions"] == 200
    assert d["holds"] and 0 < d["low"] < 10 < d["high"] and M.verdict(d).startswith("holds")
    same = M.paired_bootstrap_over_seeds([(worse, worse)])
    assert same["delta"] == 0 and not same["holds"] and M.verdict(same).startswith("not shown")
    assert M.verdict(M.paired_bootstrap_over_seeds([(worse, better)])).startswith("REVERSED")
    # A setting vs its baseline is described without a claim: higher, lower, or no difference shown.
    assert M.direction(d).startswith("higher") and M.direction(same).startswith("no difference")
    assert M.direction(M.paired_bootstrap_over_seeds([(worse, better)])).startswith("lower")
    # Two seeds that disagree: the pooled difference is their mean, on the questions both answered.
    half = pd.Series([1.0] * 110 + [0.0] * 90, index=ids)
    assert M.paired_bootstrap_over_seeds([(better, worse), (half, worse)])["delta"] == 7.5
