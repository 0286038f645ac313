"""The notebooks: committed clean, and every one runs under papermill with the smoke parameter set."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from sevila_lib import notebooks, paths

NOTEBOOKS = notebooks.notebook_paths()
EXPECTED_TABLES = {
    "00_world_statistics": {"question_type", "uniform_hit_rate"},
    "01_forward_chain": {"setting", "world_avg", "hit_rate", "oracle"},
    "02_table3_ablation": {"row", "variant", "world_avg", "hit_rate"},
    "02_table5_localizer": {"pretrained", "self_refined", "world_avg", "hit_rate"},
    "02_table8_training_frames": {"training_frames", "inference_frames", "world_avg"},
    "09_table14_iterations": {"iteration", "world_avg"},
    "03_frames_grid": {"setting", "world_avg"},
    "03_accuracy_vs_k": {"variant", "k", "world_avg"},
    "04_prompts": {"prompt", "score", "world_avg", "hit_rate"},
    "05_threshold": {"labeller", "rule", "hit_rate", "label_precision"},
    "06_table3": {"row", "world_avg (ours)", "nextqa_avg (paper)"},
    "07_selectors_zero_shot": {"setting", "world_avg", "world_counting", "hit_rate", "Δaccuracy vs uniform"},
    "08_table2_zero_shot": {"setting", "world_avg", "Δ vs Answerer", "nextqa_avg (paper)"},
    "08_table1_finetuned": {"setting", "world_avg", "Δ vs Answerer", "nextqa_avg (paper)"},
    "08_table4_moment_retrieval": {"model", "R1@0.5", "R1@0.7", "mAP", "mAP (paper)"},
    "08_table12_multiframe_localizer": {"answerer", "localizer_frames", "world_avg", "Δ vs single-frame"},
    "08_table15_cost": {"model", "seconds_per_question", "memory_gb", "time ratio vs Answerer"},
}


def test_the_ordered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["00_setup", "01_forward_chain", "02_reverse_chain", "03_ablation_frames",
                                           "04_ablation_prompts", "05_ablation_threshold", "06_paper_tables",
                                           "07_keyframe_selectors", "08_main_results", "09_iterations"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["language"] == "python"  # papermill needs it
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


def test_every_notebook_runs_headlessly_with_the_smoke_parameters(tmp_path):
    executed = notebooks.run("mini", smoke=True, reports_dir=tmp_path)
    assert [p.name for p in executed] == [p.name for p in NOTEBOOKS]
    for name, columns in EXPECTED_TABLES.items():
        table = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        assert columns <= set(table.columns), f"{name}: missing {columns - set(table.columns)}"
        assert len(table) > 0
    assert (tmp_path / "training_results.md").exists()
    index = (tmp_path / "README.md").read_text()
    assert "01_forward_chain" in index and "tables/" in index
    errors = [json.dumps(o)[:200] for p in executed for c in nbformat.read(p, 4).cells
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_runner_rejects_unknown_notebooks():
    with pytest.raises(ValueError, match="no notebook named"):
        notebooks.run("mini", only=["99_missing"], reports_dir=paths.CACHE_DIR / "unused")


def tiny_notebooks(folder, second_cell="print('second', steps)"):
    """Two minimal notebooks with typed parameters cells, like the real ones."""
    folder.mkdir(exist_ok=True)
    for name, body in (("01_first", "print('first', steps)"), ("02_second", second_cell)):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        params = nbformat.v4.new_code_cell('shared: dict = {}  # workspace.SHARED\n'
                                           'steps: int = 3  # steps\nrate: float = 0.5  # rate')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def test_unknown_or_mistyped_parameters_are_refused_naming_them(tmp_path):
    folder = tiny_notebooks(tmp_path / "nb")
    selected = notebooks.notebook_paths(folder)
    checked = notebooks.check_parameters({"smoke": "false", "steps": "8", "rate": "1", "profile": "paper"}, selected)
    assert checked == {"smoke": False, "steps": 8, "rate": 1.0, "profile": "paper"}
    assert notebooks.check_parameters({"smoke": "True", "reports_dir": "123"}, selected) == {
        "smoke": True, "reports_dir": "123"}  # a str parameter keeps the text
    with pytest.raises(ValueError, match=r"unknown parameter 'step': .* did you mean \['steps'\]"):
        notebooks.run("mini", parameters={"step": "8"}, reports_dir=tmp_path / "r", notebooks_dir=folder)
    for name, value, reason in (("steps", "eight", "'eight' is not a int literal"),
                                ("steps", "2.5", r"got 2\.5 \(float\)"), ("smoke", "maybe", "is not true/false"),
                                ("rate", "fast", "'fast' is not a float literal"), ("steps", True, "got True")):
        with pytest.raises(ValueError, match=rf"parameter '{name}' is declared \w+: .*{reason}"):
            notebooks.run("mini", parameters={name: value}, reports_dir=tmp_path / "r", notebooks_dir=folder)
    assert not (tmp_path / "r").exists()  # refused before anything ran
    assert notebooks.main(["run", "-p", "smoke=maybe"]) == 2  # the real notebooks' cells declare smoke: bool


def test_a_failed_or_interrupted_run_keeps_the_last_complete_notebook(tmp_path, monkeypatch):
    folder = tiny_notebooks(tmp_path / "nb", second_cell="raise RuntimeError('boom')")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "02_second.ipynb").write_text("last complete run")
    with pytest.raises(Exception, match="boom"):
        notebooks.run("mini", parameters={"steps": "5"}, reports_dir=reports, notebooks_dir=folder)
    outputs = json.dumps([c.get("outputs") for c in nbformat.read(reports / "01_first.ipynb", 4).cells])
    assert '"first 5\\n"' in outputs  # the first notebook ran to its end and replaced its report
    assert (reports / "02_second.ipynb").read_text() == "last complete run"  # not overwritten by the failed run
    partial = nbformat.read(reports / "02_second.partial.ipynb", 4)
    assert partial.cells[0].source.startswith("**INCOMPLETE RUN (failed: PapermillExecutionError).**")
    assert not list(reports.glob(".*.running.ipynb"))

    # Ctrl-C while papermill is writing the output notebook.
    def interrupted(source, output, **kwargs):
        nbformat.write(nbformat.read(source, 4), output)
        raise KeyboardInterrupt

    monkeypatch.setattr("papermill.execute_notebook", interrupted)
    before = (reports / "01_first.ipynb").read_text()
    with pytest.raises(KeyboardInterrupt):
        notebooks.run("mini", only=["01_first"], reports_dir=reports, notebooks_dir=folder)
    assert (reports / "01_first.ipynb").read_text() == before
    assert nbformat.read(reports / "01_first.partial.ipynb", 4).cells[0].source.startswith(
        "**INCOMPLETE RUN (interrupted).**")


def test_shared_parameters_reach_every_notebook_in_one_dict(tmp_path):
    folder = tiny_notebooks(tmp_path / "nb", second_cell="print(sorted(shared.items()), steps)")
    reports = tmp_path / "reports"
    notebooks.run("mini", parameters={"seed": "3", "steps": "5", "max_questions": "7"}, reports_dir=reports,
                  notebooks_dir=folder)
    printed = json.dumps([c.get("outputs") for c in nbformat.read(reports / "02_second.ipynb", 4).cells])
    assert "('max_questions', 7)" in printed and "('seed', 3)" in printed and "('profile', 'mini')" in printed
    assert f"('reports_dir', '{reports.resolve()}')" in printed and "] 5" in printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_reads_the_shared_parameters_in_one_call(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[0].startswith("shared: dict = {}")
    assert len(code[0].splitlines()) <= 8, "a notebook's own parameters stay few; shared ones live in SHARED"
    assert sum(s.count("open_workspace(**shared)") + s.count("reports_folder(**shared)") for s in code) == 1


def test_an_interactive_run_writes_the_scratch_folder_not_reports(tmp_path, monkeypatch):
    from sevila_lib import workspace

    monkeypatch.setattr(paths, "SCRATCH_DIR", tmp_path / "scratch")
    assert workspace.reports_folder(**{}) == tmp_path / "scratch"
    assert workspace.reports_folder(**{"reports_dir": str(tmp_path / "r"), "profile": "mini"}) == tmp_path / "r"


def test_notebooks_run_side_by_side_only_after_what_they_read(tmp_path, monkeypatch):
    folder = tiny_notebooks(tmp_path / "nb", second_cell="import os; print('threads', os.environ['OMP_NUM_THREADS'])")
    reports = tmp_path / "reports"
    order = []
    import papermill

    original = papermill.execute_notebook

    def recording(source, output, **kwargs):
        order.append(("start", Path(source).stem))
        result = original(source, output, **kwargs)
        order.append(("end", Path(source).stem))
        return result

    monkeypatch.setattr(papermill, "execute_notebook", recording)
    monkeypatch.setattr(notebooks, "AFTER", {"02_second": ("01_first",)})
    notebooks.run("mini", parameters={"steps": "2"}, reports_dir=reports, notebooks_dir=folder, jobs=2)
    assert order.index(("end", "01_first")) < order.index(("start", "02_second"))
    printed = json.dumps([c.get("outputs") for c in nbformat.read(reports / "02_second.ipynb", 4).cells])
    assert "threads 1" in printed  # one compute thread per kernel, whatever the machine
    durations = (reports / "durations.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in durations.splitlines()
            if line.startswith("| 0") or line.startswith("| whole")}
    assert set(rows) == {"01_first", "02_second", "whole run"}
    # each kernel's CPU seconds are recorded (a kernel starting up alone costs well over 0.1 s of CPU)
    assert all(float(cpu) > 0.1 for _, cpu in rows.values()), durations
    # rerunning one notebook keeps the full run's record
    notebooks.run("mini", only=["02_second"], parameters={"steps": "2"}, reports_dir=reports, notebooks_dir=folder)
    assert (reports / "durations.md").read_text() == durations


def test_notebooks_that_others_wait_for_start_first(monkeypatch):
    monkeypatch.setattr(notebooks, "AFTER", {"03_uses_c": ("02_c",), "04_uses_c": ("02_c",)})
    started = []
    selected = [Path(f"{name}.ipynb") for name in ("00_a", "01_b", "02_c", "03_uses_c", "04_uses_c")]
    notebooks._run_in_order(selected, lambda source: started.append(source.stem) or 1.0, jobs=1)
    assert started == ["02_c", "00_a", "01_b", "03_uses_c", "04_uses_c"]
