"""The keyframe explorer: a titled static figure, a chooser with verdicts, filters and re-selection."""
from matplotlib.figure import Figure

from sevila_lib.evaluation import Evaluator
from sevila_lib.explorer import keyframe_explorer, plot_question
from tests.test_evaluation import setup  # noqa: F401 (fixture)


def test_figure_title_says_question_prediction_and_gold(setup):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, progress=False)
    table = ev.run("localizer", num_frames=6, num_keyframes=2)
    row = table.iloc[1]
    fig = plot_question(ev, row)
    assert isinstance(fig, Figure)  # not pyplot's: Jupyter never auto-shows a stale copy
    title = fig._suptitle.get_text()
    gold = samples[1].answer
    assert samples[1].question in title and f"gold {chr(65 + gold)} ({samples[1].options[gold]})" in title
    assert title.splitlines()[1][0] == ("✓" if row.prediction == row.answer else "✗")
    plot_question(ev, ev.run("uniform", 6, 2).iloc[0])  # a variant without scores draws too


def test_explorer_filters_and_reselects(setup):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, progress=False)
    table = ev.run("localizer", num_frames=6, num_keyframes=2)
    box = keyframe_explorer(ev, table, ks=(1, 2, 3))
    rule, k, only, family = box.children[0].children
    choose = box.children[1]
    assert len(choose.options) == 3 and choose.options[0][0][0] in "✓✗" and samples[0].question[:20] in choose.options[0][0]
    assert choose.value == "q0" and bytes(box.children[2].value).startswith(b"\x89PNG")  # the first question is drawn
    first = bytes(box.children[2].value)
    only.value = "failures"
    assert len(choose.options) == int((table.prediction != table.answer).sum())
    only.value = "all"
    k.value = 3
    rule.value = "aks"
    assert len(choose.options) == 3
    choose.value = "q2"
    assert bytes(box.children[2].value) != first
