"""The lmms-eval plugin (sevila_lib/lmms_plugin.py): tasks run through lmms-eval 0.7.3 score exactly what the kit's
own Evaluator scores on the same mp4 files, question by question, in-process and through the `lmms-eval` CLI (whose
exit status says nothing: the results JSON is read). Needs `make lmms` (.venv-lmms) and runs with `make test-lmms`;
the default suite skips all but the prompt and record conversions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from sevila_lib.datasets import read_nextqa
from sevila_lib.lmms_plugin import export_nextqa, export_world, parse_mc_context, request_sample, world_doc
from sevila_lib.paths import SAMPLE_VIDEOS_DIR
from sevila_lib.selection import Rule
from sevila_lib.selection_files import read_selections
from sevila_lib.world import MomentsWorld

needs_lmms = pytest.mark.skipif(find_spec("lmms_eval") is None, reason="lmms-eval is not installed (make lmms)")
FIXTURES = Path(__file__).parent / "fixtures" / "datasets" / "nextqa"
LIMIT, BATCH = 20, 8  # lmms-eval's --batch_size is the kit's Evaluator batch size: the same on both sides
TASK = "sevila_world_val"
CLI = [str(Path(sys.executable).with_name("lmms-eval"))]


# --- conversions (no lmms-eval needed) --------------------------------------------------------------------

def test_world_questions_survive_nextqa_layout(tmp_path):
    for sample in MomentsWorld().qa_samples("val")[:8]:
        doc = world_doc(sample, tmp_path / f"{sample.video}.mp4", 32, 32)
        assert not doc["question"].endswith("?") and not doc["a0"].endswith(".")  # NExT-QA's raw csv style
        back = request_sample(doc, "unused", str(tmp_path / f"{sample.video}.mp4"), TASK, 0)
        assert (back.question_id, back.question, back.options, back.answer) == \
               (sample.question_id, sample.question, sample.options, sample.answer)


def test_nextqa_documents_convert_as_the_kit_reads_the_csv():
    import pandas as pd

    rows = pd.read_csv(FIXTURES / "val.csv", dtype={"video": str}).to_dict("records")
    kit = read_nextqa(FIXTURES / "val.csv", FIXTURES / "map_vid_vidorID.json")
    for row, sample in zip(rows, kit):
        got = request_sample(row, "unused", sample.video, "nextqa_mc_test", 0)
        assert (got.question_id, got.question, got.options, got.answer) == \
               (sample.question_id, sample.question, sample.options, sample.answer)


def test_other_tasks_are_read_from_their_prompt():
    question, options = parse_mc_context("What is he doing?\nA. running\nB. sitting\n(C) eating\n"
                                         "Answer with the option's letter from the given choices directly.")
    assert question == "What is he doing?" and options == ["running", "sitting", "eating"]
    with pytest.raises(ValueError, match="no lettered options"):
        parse_mc_context("Describe the video.")


# --- through lmms-eval -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The world's first LIMIT val questions as a local lmms-eval task, and lmms-eval's caches in a tmp folder."""
    out = tmp_path_factory.mktemp("lmms_world")
    export_world(out, "val", limit=LIMIT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMMS_EVAL_DATASETS_CACHE", str(out / "datasets_cache"))
        yield out


def kit_table(videos: Path, samples, scorer: str, rule: Rule, n: int, k: int):
    """The kit's own evaluation: Evaluator.select over the same mp4 files (VideoFileReader), the mini model."""
    from sevila_lib.evaluation import Evaluator
    from sevila_lib.mini import load_mini
    from sevila_lib.video import VideoFileReader

    ev = Evaluator(load_mini(), samples, VideoFileReader(videos), batch_size=BATCH, progress=False)
    return ev.select(scorer, rule, n, k)


def check_selections(path: Path, table) -> None:
    chosen = read_selections(path)
    assert set(chosen.questions) == set(table.question_id)
    for row in table.itertuples():
        pick = chosen.questions[row.question_id]
        assert (pick.frame_indices, pick.keyframes) == (list(row.sampled_frames), list(row.selected_frames))


def results_json(output_path: Path) -> dict:
    found = sorted(output_path.rglob("*_results.json"))
    assert found, f"lmms-eval wrote no results under {output_path}"
    return json.loads(found[-1].read_text())


@needs_lmms
@pytest.mark.parametrize("scorer, rule, params, n, k", [
    ("localizer", "aks", {"depth": 3}, 32, 4),
    ("answerer_confidence", "mmr", {}, 16, 3),
])
def test_world_in_process_equals_the_kit(world, tmp_path, scorer, rule, params, n, k):
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    from sevila_lib.lmms_plugin import Sevila

    model = Sevila(scorer=scorer, rule=rule, n=n, k=k, batch_size=BATCH, selections_path=str(tmp_path / "sel.json"),
                   **{f"rule_{key}": v for key, v in params.items()})
    results = evaluator.simple_evaluate(model=model, tasks=[TASK], task_manager=TaskManager(include_path=str(world)),
                                        limit=LIMIT, log_samples=True)
    table = kit_table(world / "videos", MomentsWorld().qa_samples("val")[:LIMIT], scorer, Rule(rule, **params), n, k)
    accuracy = float((table.prediction == table.answer).mean())
    assert results["results"][TASK]["exact_match,none"] == pytest.approx(accuracy, abs=1e-12)
    letters = {f"{s['doc']['type']}_{s['doc']['video']}_{s['doc']['qid']}": s["filtered_resps"][0]
               for s in results["samples"][TASK]}
    assert letters == {r.question_id: "ABCDE"[r.prediction] for r in table.itertuples()}  # question by question
    check_selections(tmp_path / "sel.json", table)


@needs_lmms
def test_world_cli_writes_the_kits_accuracy(world, tmp_path):
    """The documented command: `--model sevila` found through the entry point, results read from its JSON."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(CLI + ["--model", "sevila", "--model_args", f"rule=top_k,k=4,selections_path={out / 'sel'}",
                                 "--include_path", str(world), "--tasks", TASK, "--limit", str(LIMIT),
                                 "--batch_size", str(BATCH), "--output_path", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = kit_table(world / "videos", MomentsWorld().qa_samples("val")[:LIMIT], "localizer", Rule("top_k"), 32, 4)
    accuracy = float((table.prediction == table.answer).mean())
    got = results_json(out)["results"][TASK]["exact_match,none"]
    assert got == pytest.approx(accuracy, abs=1e-12), (got, accuracy)
    check_selections(out / "sel" / f"{TASK}.json", table)


@needs_lmms
def test_lmms_evals_own_nextqa_task_on_a_local_copy(tmp_path):
    """The NExT-QA recipe on the csv fixture and the sample clips: lmms-eval's nextqa_mc_test (its prompts and
    scoring, included by the exported YAML) finds the videos under HF_HOME and scores what the kit scores."""
    hf_home, out = tmp_path / "hf", tmp_path / "out"
    yaml = export_nextqa(FIXTURES / "val.csv", FIXTURES / "map_vid_vidorID.json", SAMPLE_VIDEOS_DIR, tmp_path / "task",
                         hf_home=hf_home)
    task = yaml.stem
    env = {**os.environ, "HF_HOME": str(hf_home), "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "datasets_cache")}
    done = subprocess.run(CLI + ["--model", "sevila", "--model_args", f"n=8,k=2,selections_path={out / 'sel.json'}",
                                 "--include_path", str(yaml.parent), "--tasks", task, "--batch_size", str(BATCH),
                                 "--output_path", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    samples = read_nextqa(FIXTURES / "val.csv", FIXTURES / "map_vid_vidorID.json")
    table = kit_table(SAMPLE_VIDEOS_DIR, samples, "localizer", Rule("top_k"), 8, 2)
    accuracy = float((table.prediction == table.answer).mean())
    assert results_json(out)["results"][task]["exact_match,none"] == pytest.approx(accuracy, abs=1e-12)
    chosen = read_selections(out / "sel.json")
    assert {q: s.keyframes for q, s in chosen.questions.items()} == \
           {r.question_id: list(r.selected_frames) for r in table.itertuples()}
