"""Report helpers: side-by-side tables, markdown/LaTeX/CSV output, figures, the reports index."""
import math

import numpy as np
import pandas as pd

from sevila_lib import report
from sevila_lib.paper import paper_table


def ours() -> pd.DataFrame:
    return pd.DataFrame({"variant": ["sevila", "blip2_concat"], "nextqa_avg": [70.04, 60.0], "extra": [1, 2]})


def test_side_by_side():
    df = report.side_by_side(ours(), paper_table("table1"), on="variant", columns=["nextqa_avg", "how2qa"],
                             delta=True)
    assert list(df.columns) == ["variant", "nextqa_avg (ours)", "nextqa_avg (paper)", "nextqa_avg (Δ)",
                                "how2qa (ours)", "how2qa (paper)", "how2qa (Δ)"]
    row = df.set_index("variant").loc["sevila"]
    assert row["nextqa_avg (paper)"] == 73.8 and math.isclose(row["nextqa_avg (Δ)"], 70.04 - 73.8)
    assert math.isnan(row["how2qa (ours)"]) and row["how2qa (paper)"] == 83.6
    outer = report.side_by_side(ours(), paper_table("table1"), on="variant", columns=["nextqa_avg"], how="outer")
    assert len(outer) == 5


def test_markdown():
    df = pd.DataFrame({"model": ["SeViLA†", "a|b"], "acc": [73.75, np.nan], "ft": [True, False], "n": [3, 4]})
    assert report.to_markdown(df) == (
        "| model | acc | ft | n |\n"
        "|:---|---:|:---|---:|\n"
        "| SeViLA† | 73.8 | ✓ | 3 |\n"
        "| a\\|b | – | ✗ | 4 |\n"
    )


def test_latex():
    df = pd.DataFrame({"set_ting": ["32→4", "50%"], "acc": [73.75, np.nan]})
    assert report.to_latex(df, floatfmt=".2f") == (
        "\\begin{tabular}{lr}\n\\hline\n"
        "set\\_ting & acc \\\\\n\\hline\n"
        "32$\\to$4 & 73.75 \\\\\n"
        "50\\% & -- \\\\\n"
        "\\hline\n\\end{tabular}\n"
    )


def test_write_table(tmp_path):
    df = paper_table("table14")
    paths = report.write_table(df, tmp_path / "sub" / "table14")
    assert [p.name for p in paths] == ["table14.md", "table14.tex", "table14.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(paths[2]), df)
    assert (tmp_path / "sub" / "table14.md").read_text().startswith("| iteration | nextqa_avg |")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["table14.csv", "table14.md", "table14.tex"]


def test_figures_render(tmp_path):
    scores = np.sin(np.linspace(0, 3, 32)) ** 2
    fig = report.plot_frame_scores(scores, [3, 10, 11, 20], relevant=[9, 10, 11, 12, 25], title="demo",
                                   path=tmp_path / "frames.png")
    assert fig.axes and (tmp_path / "frames.png").read_bytes()[:4] == b"\x89PNG"
    df = pd.DataFrame({"k": [1, 2, 4, 8] * 2, "accuracy": [0.5, 0.6, 0.65, 0.6, 0.4, 0.5, 0.55, 0.5],
                       "n": [16] * 4 + [32] * 4})
    report.plot_accuracy_vs(df, x="k", y="accuracy", hue="n", path=tmp_path / "figs" / "acc_vs_k.png")
    assert (tmp_path / "figs" / "acc_vs_k.png").stat().st_size > 1000


def test_write_index(tmp_path):
    files = ["table1.md", "figures/acc vs k.png", "executed/01_zero_shot.ipynb", "executed/.ipynb_checkpoints/x.ipynb",
             "table1.csv", "figures/b.md", "predictions/01_uniform.parquet"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    text = report.write_index(tmp_path).read_text()
    assert text.splitlines()[0] == "# Reports"
    assert "- table: [table1.md](table1.md)" in text
    assert "- predictions (one row per question): [01_uniform.parquet](predictions/01_uniform.parquet)" in text
    assert "- notebook: [01_zero_shot.ipynb](executed/01_zero_shot.ipynb)" in text
    assert "[acc vs k.png](figures/acc%20vs%20k.png)" in text
    assert text.index("[b.md]") < text.index("[acc vs k.png]")  # tables before figures within a folder
    assert "checkpoints" not in text and "table1.csv" not in text and "[README" not in text
    assert text.index("## reports/") < text.index("## executed/") < text.index("## figures/")
    assert report.write_index(tmp_path).read_text() == text  # idempotent: the index does not index itself
