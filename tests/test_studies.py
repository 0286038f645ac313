"""The training studies' plumbing: seeds side by side in processes give the same rows as one after another."""
import pandas as pd
import pytest

from sevila_lib import studies
from sevila_lib.workspace import open_workspace


def first_question(ws, seed, offset):
    """A stand-in study: what a reopened workspace sees, per seed."""
    return [{"seed": seed, "questions": len(ws.questions["val"]), "first": ws.questions["val"][0].question_id,
             "value": seed + offset}]


def test_seeds_in_separate_processes_give_the_same_rows(tmp_path):
    ws = open_workspace("mini", max_questions=3, reports_dir=tmp_path)
    alone = studies.per_seed(ws, [0, 1, 2], first_question, 10, jobs=1)
    side_by_side = studies.per_seed(ws, [0, 1, 2], first_question, 10, jobs=2)
    assert alone.to_dict("records") == side_by_side.to_dict("records")
    assert alone["questions"].tolist() == [3, 3, 3] and alone["value"].tolist() == [10, 11, 12]


def untrained_setting(ws, seed, offset):
    return [{"seed": seed, "value": -offset}]


def test_untrained_rows_are_evaluated_once_and_listed_under_every_seed(tmp_path):
    ws = open_workspace("mini", max_questions=3, reports_dir=tmp_path)
    for jobs in (1, 2):
        rows = studies.per_seed(ws, [0, 1], first_question, 10, jobs=jobs, untrained=untrained_setting)
        assert rows["seed"].tolist() == [0, 0, 1, 1] and rows["value"].tolist() == [-10, 10, -10, 11]


def with_placeholder(ws, seed, skip):
    """A stand-in study: setting "x" is measured here unless skipped (then a placeholder for another study's row)."""
    rows = [{"variant": "v", "seed": seed, "setting": "w", "questions": 3, "value": 1.0}]
    return rows + ([{studies.COPY: "x", "variant": "v", "seed": seed, "setting": "x"}] if "x" in skip else
                   [{"variant": "v", "seed": seed, "setting": "x", "questions": 3, "value": 100.0 + seed}])


def test_a_setting_another_study_measured_is_copied_with_this_studys_labels_and_order(tmp_path):
    ws = open_workspace("mini", max_questions=3, reports_dir=tmp_path)
    other = pd.DataFrame([{"variant": "u", "seed": seed, "kind": kind, "questions": 3, "value": 100.0 + seed}
                          for seed in (0, 1) for kind in ("a", "b")])
    measured = studies.per_seed(ws, [0, 1], with_placeholder, (), jobs=1)
    copied = studies.per_seed(ws, [0, 1], with_placeholder, ("x",), jobs=2,
                              copies=(other, {"x": {"kind": "a"}}))
    pd.testing.assert_frame_equal(copied, measured)
    missing = other[other["seed"] == 0]
    with pytest.raises(ValueError, match="seed': 1.*found 0"):
        studies.per_seed(ws, [0, 1], with_placeholder, ("x",),
                         copies=(missing, {"x": {"kind": "a"}}))
