"""Selection rules on hand-made scores: each rule's defining behaviour, k distinct frames in temporal order."""
import numpy as np
import pytest
import torch

from sevila_lib import selection
from sevila_lib.selection import Rule, get_rule

PEAK = np.array([0.0, 0.1, 0.0, 0.2, 5.0, 4.0, 4.5, 0.1, 0.0, 0.3, 0.0, 0.1])  # one relevant moment at 4..6


def test_every_rule_returns_k_distinct_sorted_frames():
    rng = np.random.default_rng(0)
    for name in selection.RULES:
        for t, k in ((12, 4), (7, 7), (32, 4), (5, 1)):
            scores = torch.tensor(rng.normal(size=(3, t)))
            picks = get_rule(name)(scores, k, keys=["a", "b", "c"])
            assert picks.shape == (3, k), name
            for row in picks.tolist():
                assert row == sorted(set(row)) and all(0 <= p < t for p in row), (name, row)


def test_top_k_keeps_the_best_and_breaks_ties_to_the_earlier_frame():
    assert selection.top_k(np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.9]), 2) == [1, 3]
    assert selection.top_k(PEAK, 3) == [4, 5, 6]


def test_uniform_and_random_follow_the_segment_rule():
    assert selection.uniform(np.zeros(32), 4) == [4, 12, 20, 28]
    assert selection.uniform(np.zeros(6), 3) == [1, 3, 5]
    picks = selection.random(np.zeros(32), 4, rng=np.random.default_rng(0))
    assert all(8 * j <= f < 8 * (j + 1) for j, f in enumerate(picks))  # one per segment, hence sorted
    rule = Rule("random", seed=(3, 1))
    a = rule(torch.zeros(2, 32), 4, keys=["q1", "q2"])
    b = rule(torch.zeros(2, 32), 4, keys=["q2", "q1"])  # a question's frames do not depend on its batch
    assert a[0].tolist() == b[1].tolist() and a[1].tolist() == b[0].tolist()
    assert a[0].tolist() != Rule("random", seed=(3, 2))(torch.zeros(1, 32), 4, keys=["q1"])[0].tolist()


def test_span_reads_k_frames_spread_inside_the_best_span():
    scores = np.zeros(32)
    scores[8:20] = 1.0  # one 12-frame span
    assert selection.span(scores, 4) == [9, 12, 15, 18]  # the middle of 4 equal parts of 8..19
    short = np.zeros(32)
    short[10] = 1.0  # a one-frame span is widened around its centre
    assert selection.span(short, 4) == [8, 9, 10, 11]
    gappy = np.zeros(32)
    gappy[[2, 3, 12, 13, 14, 15]] = 1.0
    # 8 "no" frames between 3 and 12 split the spans; equal mean scores: the longer one, 12..15, is kept.
    assert selection.span(gappy, 2, max_gap=6) == [13, 15]
    assert selection.span(gappy, 2, max_gap=9) == [5, 12]  # the gap is absorbed: one span 2..15, halves 2..8, 9..15


def test_aks_keeps_a_dominant_moment_and_splits_when_scores_are_flat():
    # Normalised, the top 3 of PEAK beat the mean by 0.66: above t1 = 0.5 relevance wins and the moment is kept ...
    assert selection.aks(PEAK, 3, threshold=0.5) == [4, 5, 6]
    # ... below AKS's default t1 = 0.8 coverage wins: halves 0..5 (2 frames: split again, 0..2 and 3..5) and 6..11.
    assert selection.aks(PEAK, 3) == [1, 4, 6]
    flat = np.array([0.0, 0.2, 0.1, 0.3, 0.2, 0.1, 0.0, 0.3, 0.25, 0.1, 0.0, 0.2, 0.1, 0.15, 0.3, 0.05])
    assert selection.aks(flat, 4) == [3, 7, 8, 14]  # the best frame of each quarter
    assert selection.aks(flat, 4, depth=0) == selection.top_k(flat, 4)  # no split allowed: top-k


def test_bolt_sharpening_moves_frames_from_uniform_towards_the_peak():
    scores = np.linspace(0, 1, 20) ** 2
    assert selection.bolt(scores, 4, alpha=0.0) == [2, 7, 12, 17]  # alpha 0: a uniform distribution's quantiles
    sharp = selection.bolt(scores, 4, alpha=4.0)
    assert min(sharp) > 10 and sharp == sorted(set(sharp))
    assert selection.bolt(PEAK, 3, alpha=8.0) == [4, 5, 6]  # quantiles collide on the peak: moved to free frames


def test_mmr_trades_relevance_for_temporal_spread():
    assert selection.mmr(PEAK, 3, diversity=0.0) == [4, 5, 6]  # no diversity: top-k
    assert selection.mmr(PEAK, 3, diversity=0.9) == [4, 6, 9]  # the next-best frame far enough from 4 and 6


def test_rules_reject_what_they_cannot_do():
    with pytest.raises(ValueError, match="cannot keep 7 keyframes of 6"):
        get_rule("top_k")(torch.zeros(1, 6), 7)
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        get_rule("best")
    with pytest.raises(ValueError, match="NaN"):
        get_rule("aks")(torch.tensor([[0.0, float("nan"), 1.0]]), 2)
    assert get_rule("bolt", alpha=2.0).label == "bolt(alpha=2.0)"
