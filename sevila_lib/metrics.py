"""Evaluation metrics: QA accuracy in the paper's table layouts, voting/oracle, keyframe quality, moment retrieval.

Sources:
- official `vqa.py`: overall and per-type accuracy, the STAR unweighted-mean special case, the
  NExT-QA Tem/Cau/Des grouping (not in the official code), FrameQA oracle, majority voting (not in the code).
- official `blip2_fmr.py` and the paper's appendix: QVHighlights span merging with a "span threshold" of 6 frames
  (not in the code).
- Paper Table 4: R1 and mAP exactly as the official QVHighlights evaluator (Moment-DETR's `standalone_eval/eval.py`):
  R1 reads the FIRST LISTED window, mAP the first 10 listed windows, ranked by score only after that cut. On that
  repository's `sample_val_preds.jsonl` with `highlight_val_release.jsonl` this gives its recorded numbers
  (R1@0.5 53.94, R1@0.7 34.84, mAP@0.5 54.96, mAP@0.75 31.01, mAP 32.20).
  Command line: `python -m sevila_lib.metrics qvh PREDICTIONS.jsonl highlight_val_release.jsonl`.
- the paper's tables these functions reproduce (Tables 1-3, 5-9 accuracy; Table 4 R1/mAP; Table 9 oracle).

Two table shapes are used throughout:

- a **predictions table**: one row per question (per variant) with `question_id`, `question_type`, `dataset`,
  `prediction` (int), `answer` (int), and optionally `selected_frames` / `relevant_frames` (lists of frame indices);
- a **per-frame table**: one row per (question, frame) with `question_id`, `frame_index`, `prediction`, `answer`
  (the official `FrameQA` records, BLIP-2 answering from one frame at a time).

Units: `accuracy`, `accuracy_by_type`, the frame-level and keyframe metrics, R1 and mAP return fractions in [0, 1]
(like the official `agg_metrics`); the table layouts `nextqa_groups`, `star_summary`, `summarize` return percentages
like the paper's tables.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from pathlib import Path

import numpy as np
import pandas as pd

Span = tuple[float, float]  # (start, end) in seconds
ScoredSpan = tuple[float, float, float]  # (start, end, score)

NEXTQA_GROUPS = {"T": "nextqa_tem", "C": "nextqa_cau", "D": "nextqa_des"}
STAR_TYPES = {"int": "star_int", "seq": "star_seq", "pre": "star_pre", "fea": "star_fea"}
WORLD_FAMILIES = ("descriptive", "temporal", "causal", "counting")
QVH_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95


# ---------------------------------------------------------------------------------------------------------------
# Multiple-choice accuracy (official `vqa.py`, `VideoQA` task)
# ---------------------------------------------------------------------------------------------------------------


def _correct(df: pd.DataFrame) -> pd.Series:
    """Per row: prediction == answer. A row without a gold answer (a test split) or without a prediction is an
    error naming its questions, never counted as wrong."""
    for column, what in (("answer", "gold answer (a test split?)"), ("prediction", "prediction")):
        if df[column].dtype.kind in "iu":  # integers cannot be missing (the common case, and bootstrap's hot loop)
            continue
        missing = df[column].isna()
        if missing.any():
            names = df["question_id"] if "question_id" in df else df.index.to_series()
            ids = names[missing.to_numpy()].astype(str).unique()
            raise ValueError(f"{len(ids)} question(s) without a {what}: {', '.join(ids[:5])}"
                             f"{' ...' if len(ids) > 5 else ''}; accuracy is undefined for them")
    return df["prediction"].astype(int) == df["answer"].astype(int)


def accuracy(df: pd.DataFrame) -> float:
    """Fraction of rows whose `prediction` equals `answer` (the official `agg_metrics`, official `vqa.py`); NaN if empty."""
    return float(_correct(df).mean()) if len(df) else float("nan")


def accuracy_by_type(df: pd.DataFrame) -> pd.Series:
    """Accuracy (fraction) per `question_type`, sorted by type (the official per-type keys, official `vqa.py`)."""
    return _correct(df).groupby(df["question_type"]).mean().sort_index().rename("accuracy")


def nextqa_groups(df: pd.DataFrame) -> pd.Series:
    """NExT-QA Tem/Cau/Des/Avg in percent, as in the paper's tables (official `vqa.py`; not computed by the official code).

    The 8 fine types (CW, CH, TN, TC, TP, DL, DC, DO) are grouped by their first letter. `nextqa_avg` is the overall
    accuracy over all questions, NOT the mean of the three groups: 69.4/74.2/81.3 weighted by 1612/2607/777
    questions gives the paper's 73.8. A group with no questions is NaN.
    """
    group = df["question_type"].astype(str).str[0].str.upper()
    out = {name: 100 * accuracy(df[group == letter]) for letter, name in NEXTQA_GROUPS.items()}
    out["nextqa_avg"] = 100 * accuracy(df)
    return pd.Series(out, dtype=float)


def star_summary(df: pd.DataFrame) -> pd.Series:
    """STAR Int/Seq/Pre/Fea and Avg in percent (official `vqa.py`, the official STAR special case).

    Types are matched by their first three letters ("Interaction" -> `star_int`). When all four types are present,
    `star_avg` is the UNWEIGHTED mean of the four type accuracies, as the official `_report_metrics` does (the
    paper's 64.9 = mean(63.7, 70.4, 63.1, 62.4)). Otherwise the official code keeps the overall accuracy, and so do we.
    """
    kind = df["question_type"].astype(str).str[:3].str.lower()
    out = {name: 100 * accuracy(df[kind == key]) for key, name in STAR_TYPES.items()}
    types = [out[name] for name in STAR_TYPES.values()]
    out["star_avg"] = float(np.mean(types)) if not np.isnan(types).any() else 100 * accuracy(df)
    return pd.Series(out, dtype=float)


def world_summary(df: pd.DataFrame) -> pd.Series:
    """Per-family accuracy (percent) on the mini world, plus `world_avg` = overall accuracy."""
    out = {f"world_{fam}": 100 * accuracy(df[df["question_type"] == fam]) for fam in WORLD_FAMILIES}
    out["world_avg"] = 100 * accuracy(df)
    return pd.Series(out, dtype=float)


def summarize(df: pd.DataFrame) -> pd.Series:
    """One row of percentages in the paper's column names, laid out per `dataset` (official `vqa.py`; the paper's Table 1).

    nextqa -> `nextqa_tem/cau/des/avg` (`nextqa_groups`); star -> `star_int/seq/pre/fea/avg` (`star_summary`);
    world -> `world_<family>`, `world_avg`; any other dataset (how2qa, tvqa, vlep, ...) -> one column named after it
    holding the overall accuracy. A table mixing datasets gives the columns of each, in order of appearance.
    """
    parts = []
    for name, part in df.groupby("dataset", sort=False):
        if name == "nextqa":
            parts.append(nextqa_groups(part))
        elif name == "star":
            parts.append(star_summary(part))
        elif name == "world":
            parts.append(world_summary(part))
        else:
            parts.append(pd.Series({str(name): 100 * accuracy(part)}, dtype=float))
    return pd.concat(parts) if parts else pd.Series(dtype=float)


# ---------------------------------------------------------------------------------------------------------------
# Single-frame answering: voting and oracle (official `vqa.py` `FrameQA`; paper Table 9)
# ---------------------------------------------------------------------------------------------------------------


def per_frame_accuracy(per_frame: pd.DataFrame) -> float:
    """Accuracy over all (question, frame) rows: the official FrameQA `avg_acc` (official `vqa.py`), as a fraction."""
    return accuracy(per_frame)


def oracle_accuracy(per_frame: pd.DataFrame) -> float:
    """Fraction of questions where at least one frame answers correctly: FrameQA `agg_metrics`, Table 9's brackets."""
    return float(_correct(per_frame).groupby(per_frame["question_id"]).any().mean())


def vote(per_frame: pd.DataFrame) -> pd.DataFrame:
    """Majority vote over frames per question: BLIP-2^voting (paper Tables 1, 2, 9; not in the official code).

    Tie rule: among the options with the most votes, the LOWEST option index wins. This depends only on the vote
    counts, never on row order. Returns one row per question (sorted by `question_id`) with `prediction`, `answer`,
    `num_votes` (votes for the winner) and `num_frames`, plus `question_type`/`dataset` when present, so the result
    feeds straight into `accuracy` or `summarize`.
    """
    counts = per_frame.groupby(["question_id", "prediction"]).size().rename("num_votes").reset_index()
    counts = counts.sort_values(["question_id", "num_votes", "prediction"], ascending=[True, False, True])
    winners = counts.drop_duplicates("question_id").set_index("question_id")
    first = per_frame.groupby("question_id").first()
    keep = [c for c in ("answer", "question_type", "dataset") if c in first.columns]
    out = winners.join(first[keep]).join(per_frame.groupby("question_id").size().rename("num_frames"))
    return out.reset_index()[["question_id", "prediction", "num_votes", "num_frames", *keep]]


# ---------------------------------------------------------------------------------------------------------------
# Keyframe quality against known relevant frames (our addition; the world and QVHighlights know the true moments)
# ---------------------------------------------------------------------------------------------------------------


def _as_set(frames: object) -> set[int]:
    if frames is None or (isinstance(frames, float) and np.isnan(frames)):
        return set()
    return {int(i) for i in frames}  # type: ignore[union-attr]


def _frame_sets(df: pd.DataFrame) -> list[tuple[set[int], set[int]]]:
    """(selected, relevant) per row, skipping rows whose relevant frames are unknown or empty."""
    if "relevant_frames" not in df.columns:
        return []
    pairs = [(_as_set(s), _as_set(r)) for s, r in zip(df["selected_frames"], df["relevant_frames"])]
    return [(s, r) for s, r in pairs if r]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def keyframe_hit_rate(df: pd.DataFrame) -> float:
    """Fraction of questions (with known relevant frames) where at least one selected frame is relevant."""
    return _mean(float(bool(s & r)) for s, r in _frame_sets(df))


def keyframe_recall(df: pd.DataFrame) -> float:
    """Mean over questions of |selected ∩ relevant| / min(k, |relevant|), with k = |selected|.

    Dividing by min(k, |relevant|) instead of |relevant| makes 1.0 reachable when the moment spans more frames than
    the k keyframes (4 keyframes inside a 10-frame moment is perfect). Questions without relevant frames are
    skipped; a question with k = 0 scores 0. NaN when no question qualifies.
    """
    return _mean(len(s & r) / min(len(s), len(r)) if s else 0.0 for s, r in _frame_sets(df))


def keyframe_precision(df: pd.DataFrame) -> float:
    """Mean over questions of |selected ∩ relevant| / |selected| (questions with known relevant frames only)."""
    return _mean(len(s & r) / len(s) if s else 0.0 for s, r in _frame_sets(df))


# ---------------------------------------------------------------------------------------------------------------
# QVHighlights moment retrieval (paper appendix and Table 4): span merging for the Localizer, and R1 /
# mAP exactly as the official QVHighlights evaluator (Moment-DETR's `standalone_eval/eval.py` and `utils.py`)
# ---------------------------------------------------------------------------------------------------------------


def merge_frame_predictions(
    yes_flags: Sequence[bool],
    *,
    frame_stride_seconds: float | None = None,
    frame_times: Sequence[float] | None = None,
    scores: Sequence[float] | None = None,
    max_gap: int = 6,
    single_span: bool = False,
) -> list[ScoredSpan]:
    """Merge per-frame yes/no answers of the Localizer into scored spans, LISTED IN RANK ORDER (paper appendix:
    the "span threshold"; not in the official code).

    Rule: consecutive "yes" frames form a span, and a run of at most `max_gap` (paper: 6, the "span threshold")
    consecutive "no" frames between two "yes" frames is absorbed into the span; a run of `max_gap + 1` splits it.
    Leading and trailing "no" frames belong to no span.

    Time: frame i covers [t_i, t_i + stride), with t_i = `frame_times[i]` if given, else i * stride. The stride is
    `frame_stride_seconds` if given, else the median gap between `frame_times`, else 2 s (QVHighlights frames are
    taken at 0.5 fps, following Moment-DETR).

    Score (our choice; the paper does not say): the mean of `scores` (e.g. the per-frame yes probability) over ALL
    frames of the span, tolerated "no" frames included, so gappy spans rank lower. Without `scores` the 0/1 flags
    are used. Rank: score descending, then longer span, then earlier start — and the returned LIST is in that
    order, because the official evaluator reads list order: its R1 takes the first listed window and its mAP the
    first 10 listed (`qvh_submission_rows` writes them in this order).

    `single_span=True` follows the appendix's "integrated into a single video-level span": one span from the first
    span's start to the last span's end, scored as the mean over all its frames. Returns [] when no frame says yes.
    """
    flags = np.asarray(yes_flags, dtype=bool)
    values = np.asarray(scores, dtype=float) if scores is not None else flags.astype(float)
    if frame_times is not None:
        times = np.asarray(frame_times, dtype=float)
        stride = frame_stride_seconds if frame_stride_seconds is not None else (
            float(np.median(np.diff(times))) if len(times) > 1 else 0.0)
    else:
        stride = frame_stride_seconds if frame_stride_seconds is not None else 2.0
        times = np.arange(len(flags)) * stride
    yes = np.flatnonzero(flags)
    if len(yes) == 0:
        return []
    # Split the "yes" indices wherever more than `max_gap` "no" frames separate two of them.
    breaks = np.flatnonzero(np.diff(yes) - 1 > max_gap) + 1
    runs = [(int(r[0]), int(r[-1])) for r in np.split(yes, breaks)]
    if single_span:
        runs = [(runs[0][0], runs[-1][1])]
    spans = [(float(times[a]), float(times[b] + stride), float(values[a : b + 1].mean()), b - a) for a, b in runs]
    spans.sort(key=lambda s: (-s[2], -s[3], s[0]))
    return [(start, end, score) for start, end, score, _ in spans]


def temporal_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two time spans (start, end); 0 when they do not overlap or both are empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _pairs(preds, gts) -> list[tuple[str, list, list]]:
    """(query name, predicted windows, gt windows) per query: by qid for mappings, by position for sequences.

    Every query must have a prediction list with at least one window and at least one ground-truth window, and
    the two sides must hold the same queries (the official evaluator asserts matching qids, crashes with an
    IndexError on an empty prediction list in R1 and silently drops that query from mAP, and divides by zero
    for a query without gt windows). Each of these raises ValueError naming the query instead.
    """
    if isinstance(gts, Mapping):
        if not isinstance(preds, Mapping):
            raise TypeError("ground truth keyed by qid needs predictions keyed by qid")
        missing = [q for q in gts if q not in preds]
        extra = [q for q in preds if q not in gts]
        if missing or extra:
            raise ValueError(f"predictions and ground truth must hold the same qids (as the official evaluator "
                             f"asserts): no prediction for {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                             f"not in the ground truth: {extra[:5]}{'...' if len(extra) > 5 else ''}")
        pairs = [(str(q), list(preds[q]), list(g)) for q, g in gts.items()]
    else:
        if len(preds) != len(gts):
            raise ValueError(f"one list of predicted windows per query: {len(preds)} lists for {len(gts)} queries")
        pairs = [(f"#{i}", list(p), list(g)) for i, (p, g) in enumerate(zip(preds, gts))]
    for name, pred, gt in pairs:
        if not pred:
            raise ValueError(f"query {name}: empty list of predicted windows; the official evaluator cannot score "
                             f"it (R1 fails, mAP silently leaves the query out) — predict at least one window")
        if not gt:
            raise ValueError(f"query {name}: no ground-truth window (an empty relevant_windows); R1 and mAP are "
                             f"undefined for it")
    return pairs


def recall_at_1(
    pred_spans_per_query: Mapping[str, Sequence] | Sequence[Sequence],
    gt_windows_per_query: Mapping[str, Sequence[Span]] | Sequence[Sequence[Span]],
    iou: float = 0.5,
) -> float:
    """R1@iou as the official QVHighlights evaluator (`compute_mr_r1`): the fraction of queries whose FIRST LISTED
    predicted window — list order, whatever its score — has IoU >= `iou` (equal counts) with the gt window it
    overlaps most. Paper Table 4 reports R1@0.5 and R1@0.7. Returns a fraction; see `_pairs` for the errors."""
    hits = [max(temporal_iou(pred[0], g) for g in gt) >= iou
            for _, pred, gt in _pairs(pred_spans_per_query, gt_windows_per_query)]
    return _mean(map(float, hits))


def average_precision(pred_spans: Sequence[Sequence[float]], gt_windows: Sequence[Span], iou: float) -> float:
    """Average precision of one query at one IoU threshold, as the official `compute_average_precision_detection`.

    Ranking: predictions sorted by score descending, a stable sort, so ties keep list order (unscored spans keep
    list order). Matching: each prediction in turn tries the gt windows from highest IoU down; the first unmatched
    one with IoU >= `iou` (equal counts) makes it a true positive, an IoU below `iou` makes it a false positive, so
    a duplicate of an already-found moment is a false positive. AP is the VOC all-points area under the
    precision-recall curve with precision made monotone; recall = TP / number of gt windows. Equal IoUs are tried
    in the official order (`argsort` reversed: the later gt window first). Callers truncate first (official
    `mean_average_precision` keeps the first 10 listed windows before ranking).
    """
    if not pred_spans or not gt_windows:
        return 0.0
    ranked = sorted(pred_spans, key=lambda s: -s[2]) if all(len(s) > 2 for s in pred_spans) else list(pred_spans)
    matched = [False] * len(gt_windows)
    tp = np.zeros(len(ranked))
    for i, span in enumerate(ranked):
        ious = np.array([temporal_iou(span, g) for g in gt_windows])
        for j in np.argsort(ious)[::-1]:
            if ious[j] < iou:
                break
            if not matched[j]:
                matched[j], tp[i] = True, 1.0
                break
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(ranked) + 1)
    recall = cum_tp / len(gt_windows)
    precision = np.maximum.accumulate(np.concatenate([precision, [0.0]])[::-1])[::-1][:-1]  # monotone envelope
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * precision))


def mean_average_precision_per_threshold(
    pred_spans_per_query: Mapping[str, Sequence] | Sequence[Sequence],
    gt_windows_per_query: Mapping[str, Sequence[Span]] | Sequence[Sequence[Span]],
    iou_thresholds: Sequence[float] = QVH_IOU_THRESHOLDS,
    max_predictions: int | None = 10,
) -> dict[float, float]:
    """{IoU threshold: mAP over queries} as the official `compute_mr_ap`: each query keeps its first
    `max_predictions` (10) windows IN LIST ORDER, and only then are they ranked by score (`average_precision`)."""
    pairs = _pairs(pred_spans_per_query, gt_windows_per_query)
    return {thr: _mean(average_precision(pred[:max_predictions] if max_predictions else pred, gt, thr)
                       for _, pred, gt in pairs) for thr in iou_thresholds}


def mean_average_precision(
    pred_spans_per_query: Mapping[str, Sequence] | Sequence[Sequence],
    gt_windows_per_query: Mapping[str, Sequence[Span]] | Sequence[Sequence[Span]],
    iou_thresholds: Sequence[float] = QVH_IOU_THRESHOLDS,
    max_predictions: int | None = 10,
) -> float:
    """QVHighlights moment-retrieval mAP (paper Table 4, "mAP"): the official average over IoU 0.5:0.05:0.95 of
    `mean_average_precision_per_threshold`. Returns a fraction. The paper does not describe its own mAP procedure
    appendix); this is the QVHighlights benchmark's."""
    per_threshold = mean_average_precision_per_threshold(pred_spans_per_query, gt_windows_per_query,
                                                         iou_thresholds, max_predictions)
    return _mean(per_threshold.values())


QVH_COLUMNS = ("R1@0.5", "R1@0.7", "mAP@0.5", "mAP@0.75", "mAP")


def qvh_moment_retrieval(pred_spans_per_query: Mapping[str, Sequence],
                         gt_windows_per_query: Mapping[str, Sequence[Span]]) -> dict[str, float]:
    """The numbers of paper Table 4 in percent, rounded to 2 decimals as the official evaluator prints them
    (its "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-full-mAP"; the average is
    taken over the unrounded per-threshold values, as there)."""
    aps = mean_average_precision_per_threshold(pred_spans_per_query, gt_windows_per_query)
    r1 = {t: recall_at_1(pred_spans_per_query, gt_windows_per_query, t) for t in (0.5, 0.7)}
    values = [r1[0.5], r1[0.7], aps[0.5], aps[0.75], float(np.mean(list(aps.values())))]
    return {name: round(100 * v, 2) for name, v in zip(QVH_COLUMNS, values)}


def _jsonl(path: str | Path) -> list[tuple[int, dict]]:
    out = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}, line {number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: malformed JSON ({err.msg})") from None
            if not isinstance(record, dict) or "qid" not in record:
                raise ValueError(f"{path}, line {number}: expected an object with a 'qid'")
            out.append((number, record))
    if not out:
        raise ValueError(f"{path}: no records (an empty file)")
    return out


def _windows(path, number: int, record: dict, key: str, width: int) -> list[tuple[float, ...]]:
    windows = record.get(key)
    if not isinstance(windows, list) or not all(
            isinstance(w, (list, tuple)) and len(w) == width and all(isinstance(x, (int, float)) for x in w)
            for w in windows):
        what = "[start, end, score]" if width == 3 else "[start, end]"
        raise ValueError(f"{path}, line {number} (qid {record['qid']}): {key!r} must be a list of {what}, "
                         f"got {str(windows)[:80]}")
    bad = [w for w in windows if not all(math.isfinite(x) and not isinstance(x, bool) for x in w)]
    if bad:  # json.loads reads NaN and Infinity; a NaN score would rank the windows arbitrarily
        raise ValueError(f"{path}, line {number} (qid {record['qid']}): {key!r} holds a window with a value that "
                         f"is not a finite number: {bad[0]}")
    return [tuple(float(x) for x in w) for w in windows]


def _by_qid(path, rows: list[tuple[int, dict]], key: str, width: int) -> dict[str, list]:
    out: dict[str, list] = {}
    for number, record in rows:
        qid = str(record["qid"])
        if qid in out:
            raise ValueError(f"{path}, line {number}: qid {qid} appears twice")
        out[qid] = _windows(path, number, record, key, width)
    return out


def read_qvh_submission(path: str | Path) -> dict[str, list[ScoredSpan]]:
    """The official submission jsonl: one {"qid", "pred_relevant_windows": [[start, end, score], ...], ...} per
    line (other keys such as "query", "vid", "pred_saliency_scores" are ignored). qid -> windows in LIST order."""
    return _by_qid(path, _jsonl(path), "pred_relevant_windows", 3)


def read_qvh_ground_truth(path: str | Path) -> dict[str, list[Span]]:
    """`highlight_val_release.jsonl`: qid -> `relevant_windows`, each [start, end] with 0 <= start <= end (the
    windows that decide every number: a reversed or negative one is refused, naming file, line and qid). A file
    without `relevant_windows` (the test split, or a submission given in its place) is refused."""
    rows = _jsonl(path)
    unlabelled = [(n, r) for n, r in rows if "relevant_windows" not in r]
    if unlabelled:
        number, record = unlabelled[0]
        why = ("it is a submission (pred_relevant_windows), not ground truth" if "pred_relevant_windows" in record
               else "the test split's file has none; evaluate on highlight_val_release.jsonl")
        raise ValueError(f"{path}, line {number} (qid {record['qid']}): no 'relevant_windows' "
                         f"({len(unlabelled)} of {len(rows)} records): {why}")
    windows = _by_qid(path, rows, "relevant_windows", 2)
    for number, record in rows:
        bad = [w for w in windows[str(record["qid"])] if not 0 <= w[0] <= w[1]]
        if bad:
            raise ValueError(f"{path}, line {number} (qid {record['qid']}): relevant window {list(bad[0])} "
                             f"{'starts before 0' if bad[0][0] < 0 else 'ends before it starts'}")
    return windows


def qvh_submission_rows(spans_per_query: Mapping[str, Sequence[ScoredSpan]]) -> list[dict]:
    """Official submission records from ranked spans (e.g. `merge_frame_predictions`'s): list order kept."""
    rows = []
    for qid, spans in spans_per_query.items():
        key = int(qid) if str(qid).isdigit() else qid
        rows.append({"qid": key, "pred_relevant_windows": [[float(s), float(e), float(c)] for s, e, c in spans]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.metrics",
                                     description="QVHighlights moment retrieval as the official evaluator.")
    commands = parser.add_subparsers(dest="command", required=True)
    qvh = commands.add_parser("qvh", help="R1@0.5, R1@0.7, mAP@0.5, mAP@0.75, mAP (0.5:0.05:0.95)")
    qvh.add_argument("predictions", help="submission jsonl: {qid, pred_relevant_windows: [[s, e, score], ...]}")
    qvh.add_argument("ground_truth", help="highlight_val_release.jsonl (with relevant_windows)")
    args = parser.parse_args(argv)
    try:
        numbers = qvh_moment_retrieval(read_qvh_submission(args.predictions), read_qvh_ground_truth(args.ground_truth))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, value in numbers.items():
        print(f"{name:<9} {value:6.2f}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Uncertainty
# ---------------------------------------------------------------------------------------------------------------


def bootstrap_ci(
    df: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], float] = accuracy,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of `statistic(df)`, resampling QUESTIONS.

    Question ids are drawn with replacement (all rows of a drawn question come along, so per-frame tables work
    too); `statistic` is evaluated on each resample and the alpha/2 and 1 - alpha/2 quantiles are returned.
    Deterministic given `seed` (numpy's default_rng). Resamples where the statistic is NaN (e.g. a STAR type drawn
    zero times) are ignored.
    """
    codes, uniques = pd.factorize(df["question_id"])
    rows_of = df.groupby(codes, sort=True).indices  # question code -> row positions
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(uniques), size=len(uniques))
        rows = np.concatenate([rows_of[q] for q in drawn])
        stats.append(statistic(df.iloc[rows]))
    low, high = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def per_question(df: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """One value per question id: 1/0 correctness ("accuracy"), or whether a keyframe is relevant ("hit_rate";
    questions without known relevant frames and counting questions, whose evidence is spread out, are left out)."""
    if metric == "accuracy":
        return pd.Series(_correct(df).astype(float).to_numpy(), index=df["question_id"].to_numpy())
    if metric == "hit_rate":
        known = df[df["relevant_frames"].map(lambda r: bool(_as_set(r))) & (df["question_type"] != "counting")]
        hits = [float(bool(sel & rel)) for sel, rel in _frame_sets(known)]
        return pd.Series(hits, index=known["question_id"].to_numpy(), dtype=float)
    raise ValueError(f"unknown per-question metric {metric!r}; use 'accuracy' or 'hit_rate'")


def paired_bootstrap(treatment: pd.DataFrame, baseline: pd.DataFrame, metric: str = "accuracy",
                     n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Difference treatment − baseline of a per-question metric (percentage points) on the questions both tables
    answer, with a paired percentile bootstrap CI: the same resampled questions score both settings, so the
    interval reflects the difference itself, not two independent noises. `holds` is True when the CI excludes 0
    in the treatment's favour."""
    return paired_bootstrap_over_seeds([(per_question(treatment, metric), per_question(baseline, metric))],
                                       n_boot, seed, alpha)


def paired_bootstrap_over_seeds(pairs: Sequence[tuple[pd.Series, pd.Series]], n_boot: int = 2000, seed: int = 0,
                                alpha: float = 0.05) -> dict[str, float]:
    """`paired_bootstrap` pooled over training seeds: `pairs` holds one (treatment, baseline) pair of per-question
    values (`per_question`) per seed. The difference is averaged over seeds and questions; the bootstrap resamples
    QUESTIONS (the same draw for every seed), so the CI covers which questions were asked, with the seeds' spread
    inside each draw. Only questions every pair answers count."""
    nan = {"delta": float("nan"), "low": float("nan"), "high": float("nan"), "questions": 0, "seeds": len(pairs),
           "holds": False}
    if not pairs:
        return nan
    common = pairs[0][0].index
    for a, b in pairs:
        common = common.intersection(a.index).intersection(b.index)
    if len(common) == 0:
        return nan
    diff = np.stack([100 * (a.loc[common].to_numpy() - b.loc[common].to_numpy()) for a, b in pairs]).mean(0)
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    low, high = np.quantile(diff[draws].mean(1), [alpha / 2, 1 - alpha / 2])
    return {"delta": float(diff.mean()), "low": float(low), "high": float(high), "questions": int(len(common)),
            "seeds": len(pairs), "holds": bool(low > 0)}


def format_delta(d: Mapping) -> str:
    """"+2.1 [+0.4, +3.9]": a difference in points with its 95% CI."""
    return f"{d['delta']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"


def parse_delta(text: str) -> dict[str, float] | None:
    """`format_delta`'s text back to numbers ({"delta", "low", "high"}), None for anything else ("–")."""
    import re

    found = re.fullmatch(r"\s*([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]\s*", str(text))
    return None if found is None else dict(zip(("delta", "low", "high"), map(float, found.groups())))


def verdict(d: Mapping) -> str:
    """What a paired difference shows: "holds" only when its CI excludes 0 in the treatment's favour."""
    if d["low"] > 0:
        return "holds (CI excludes 0)"
    if d["high"] < 0:
        return "REVERSED (CI below 0)"
    return "not shown (CI includes 0)"


def direction(d: Mapping) -> str:
    """A setting's paired difference from its baseline in words, with no claim attached: "higher" or "lower"
    only when the CI excludes 0."""
    if d["low"] > 0:
        return "higher (CI excludes 0)"
    if d["high"] < 0:
        return "lower (CI excludes 0)"
    return "no difference shown (CI includes 0)"


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile (two-sided 95%): the table for few degrees of freedom, a Cornish-Fisher
    expansion beyond (within 0.001 of the exact value for df > 10)."""
    if df in _T975:
        return _T975[df]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_and_ci(values: Sequence[float]) -> str:
    """"62.4 ± 1.3" — the mean over seeds ± the half-width of its 95% t-interval; one value says "(1 seed)"
    instead of a spread it cannot have."""
    values = [float(v) for v in values if not pd.isna(v)]
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.1f} (1 seed)"
    half = t_quantile_975(len(values) - 1) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return f"{mean:.1f} ± {half:.1f}"


def compare_to_baseline(tables: Mapping[str, pd.DataFrame], baseline: str, n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """One row per setting: accuracy in the paper's columns, keyframe hit-rate and recall where relevant frames are
    known, and the paired-bootstrap difference from `tables[baseline]` with its 95% CI (accuracy and hit-rate)."""
    rows = []
    for label, table in tables.items():
        row = {"setting": label, "questions": len(table), **summarize(table).round(1).to_dict()}
        if "relevant_frames" in table and table["relevant_frames"].notna().any():
            localized = table[table["question_type"] != "counting"]
            row["hit_rate"] = round(100 * keyframe_hit_rate(localized), 1)
            row["recall"] = round(100 * keyframe_recall(localized), 1)
        for metric in ("accuracy", "hit_rate") if "hit_rate" in row else ("accuracy",):
            if label == baseline:
                continue
            row[f"Δ{metric} vs {baseline}"] = format_delta(paired_bootstrap(table, tables[baseline], metric, n_boot,
                                                                             seed))
        rows.append(row)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    sys.exit(main())
