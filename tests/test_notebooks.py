"""The notebooks: committed clean, and every one runs under papermill with the smoke parameter set."""
import json

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
    "02_table14_iterations": {"iteration", "world_avg"},
    "03_frames_grid": {"setting", "world_avg"},
    "03_accuracy_vs_k": {"variant", "k", "world_avg"},
    "04_prompts": {"prompt", "score", "world_avg", "hit_rate"},
    "05_threshold": {"labeller", "rule", "hit_rate", "label_precision"},
    "06_table3": {"row", "world_avg (ours)", "nextqa_avg (paper)"},
    "07_selectors_zero_shot": {"setting", "world_avg", "world_counting", "hit_rate", "Δaccuracy vs uniform"},
}


def test_the_ordered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["00_setup", "01_forward_chain", "02_reverse_chain", "03_ablation_frames",
                                           "04_ablation_prompts", "05_ablation_threshold", "06_paper_tables",
                                           "07_keyframe_selectors"]


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
