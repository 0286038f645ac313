"""The paper's training studies, each one call from a notebook (`02_reverse_chain`, `05_ablation_threshold`,
`09_iterations`): train what a table needs for every seed (`experiments.train`: a finished run is reused),
evaluate it on the val questions, and return the rows, each with its per-question outcomes so tables can pair
them with their baseline (`experiments.mean_over_seeds`, `experiments.effect`).

| function              | paper                       | runs it trains (per seed)                                      |
|-----------------------|-----------------------------|----------------------------------------------------------------|
| `localizer_study`     | Table 5 (PT, SR, PT+SR)     | localizer_pretrained, localizer_refined, localizer_pt_sr       |
| `answerer_study`      | Table 3 rows A–G            | answerer_ft_random, answerer_finetuned                         |
| `training_frames_study` | Table 8                   | (those of Table 3)                                             |
| `iteration_study`     | Table 14                    | iteration{r}_answerer, iteration{r}_localizer (r ≥ 2)          |
| `threshold_study`     | the open question on τ      | sr_* (online pseudo-labels under each rule; argmax: Table 5's) |
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Sequence

import pandas as pd

from . import experiments as ex, training
from .workspace import Workspace, open_workspace

# The claims of the paper's §3.3 and Tables 3/5 this kit tests: (rows, metric, baseline, treatment).
LOCALIZER_CLAIMS = {
    "Localizer pre-training raises keyframe hit-rate": ("hit_rate", dict(pretrained=False, self_refined=False),
                                                        dict(pretrained=True, self_refined=False)),
    "Reverse chain (SR) raises keyframe hit-rate": ("hit_rate", dict(pretrained=False, self_refined=False),
                                                    dict(pretrained=False, self_refined=True)),
    "Reverse chain (SR) raises forward-chain QA accuracy": ("accuracy", dict(pretrained=False, self_refined=False),
                                                            dict(pretrained=False, self_refined=True)),
    "SR on top of PT raises keyframe hit-rate": ("hit_rate", dict(pretrained=True, self_refined=False),
                                                 dict(pretrained=True, self_refined=True)),
    "SR on top of PT raises forward-chain QA accuracy": ("accuracy", dict(pretrained=True, self_refined=False),
                                                         dict(pretrained=True, self_refined=True)),
}
ANSWERER_CLAIMS = {
    "Answerer fine-tuning raises QA accuracy (uniform 4 frames)": ("accuracy", {"row": "B"}, {"row": "E"}),
    "Answerer fine-tuning raises QA accuracy (with Localizer†)": ("accuracy", {"row": "C"}, {"row": "F"}),
    "The refined Localizer helps the fine-tuned Answerer (G vs E)": ("accuracy", {"row": "E"}, {"row": "G"}),
}


def _seeds(ws: Workspace, seeds: Sequence[int]) -> list[int]:
    return list(seeds)[:1] if ws.smoke else list(seeds)


def _one_seed(options: dict, study: Callable, seed: int, args: tuple) -> list[dict]:
    """A study's work for one seed in a fresh process (the workspace reopened from its arguments)."""
    return study(open_workspace(**options), seed, *args)


def per_seed(ws: Workspace, seeds: Sequence[int], study: Callable, *args, jobs: int = 1,
             untrained: Callable | None = None, copies: tuple | None = None) -> pd.DataFrame:
    """`study(ws, seed, *args)` (a list of rows) for every seed, `jobs` seeds side by side in separate processes.
    Seeds are independent (their own runs; shared caches are written atomically) and each process computes on
    one thread, so the rows are the same whatever `jobs`. `untrained(ws, seed, *args)`: the rows of settings that
    train nothing (the same for every seed), evaluated once, beside the seeds, and listed first under each seed.

    `copies` = (rows of another study, {setting: column values that pick its row}): a setting that study already
    evaluated, with the same runs read the same way, is returned by `study` as a placeholder row
    {COPY: setting, labels...}; it becomes that study's row of the same seed, relabelled (the placeholder's labels,
    then the measured values from "questions" on), so nothing is evaluated twice and the rows keep their order."""
    seeds = _seeds(ws, seeds)
    calls = ([untrained] if untrained else []) + [study] * len(seeds)
    call_seeds = seeds[:1] * bool(untrained) + seeds
    if jobs <= 1 or len(seeds) <= 1:
        parts = [call(ws, seed, *args) for call, seed in zip(calls, call_seeds)]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_one_seed, [ws.options] * len(calls), calls, call_seeds, [args] * len(calls)))
    shared = parts.pop(0) if untrained else []
    rows = [row for seed, part in zip(seeds, parts) for row in [{**row, "seed": seed} for row in shared] + part]
    return pd.DataFrame([_copied(row, *copies) if COPY in row else row for row in rows])


COPY = "copy of"  # a placeholder row's setting: its numbers come from another study's rows (`per_seed`)


def _copied(placeholder: dict, source: pd.DataFrame, settings: dict) -> dict:
    match = {"seed": placeholder["seed"], **settings[placeholder[COPY]]}
    picked = source[(source[list(match)] == pd.Series(match)).all(axis=1)]
    if len(picked) != 1:
        raise ValueError(f"expected one row with {match} to copy, found {len(picked)}")
    row = picked.iloc[0].to_dict()
    measured = list(row)[list(row).index("questions"):]  # summary rows: labels first, then "questions", numbers
    labels = {key: value for key, value in placeholder.items() if key != COPY}
    return {**labels, **{key: row[key] for key in measured}}


def localizer_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32, num_keyframes: int = 4,
                    jobs: int = 1) -> pd.DataFrame:
    """Table 5: the zero-shot Answerer reading the top k of n frames of four Localizers — untrained, pre-trained
    on moment queries (PT, Localizer†), self-refined on the zero-shot Answerer's pseudo-labels (SR), both."""
    return per_seed(ws, seeds, _localizer_seed, num_frames, num_keyframes, jobs=jobs, untrained=_untrained_localizer)


def _untrained_localizer(ws: Workspace, seed: int, num_frames: int, num_keyframes: int) -> list[dict]:
    return ex.evaluate(ws, [], seed, ("localizer",), num_frames, num_keyframes, pretrained=False, self_refined=False)


def _localizer_seed(ws: Workspace, seed: int, num_frames: int, num_keyframes: int) -> list[dict]:
    ex.train(ws, "localizer_pretrained", "pretrain_localizer", seed)
    ex.train(ws, "localizer_refined", "refine_localizer", seed)
    ex.train(ws, "localizer_pt_sr", "refine_localizer", seed, start_from=["localizer_pretrained"])
    rows = []
    for runs, pretrained, refined in ((["localizer_pretrained"], True, False),
                                      (["localizer_refined"], False, True), (["localizer_pt_sr"], True, True)):
        rows += ex.evaluate(ws, runs, seed, ("localizer",), num_frames, num_keyframes, pretrained=pretrained,
                            self_refined=refined)
    return rows


def answerer_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32, num_keyframes: int = 4,
                   jobs: int = 1, localizers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 3 rows A–G: A all n frames and B k uniform frames, zero-shot; C Localizer† and D the refined (PT+SR)
    Localizer → zero-shot Answerer; E the Answerer fine-tuned on random frames (one per segment) reading k
    uniform frames; F the Answerer fine-tuned on the frozen Localizer†'s keyframes, with Localizer†; G that
    Answerer with the refined Localizer. Needs `localizer_study`'s runs; given its rows (`localizers`), rows C and
    D are its PT and PT+SR rows of the same seed (the same runs read the same way), copied, not evaluated again."""
    reused = {} if localizers is None else {name: dict(pretrained=True, self_refined=refined)
                                            for name, refined in (("C", False), ("D", True))}
    return per_seed(ws, seeds, _answerer_seed, num_frames, num_keyframes, tuple(reused), jobs=jobs,
                    untrained=_untrained_answerer, copies=(localizers, reused))


def _untrained_answerer(ws: Workspace, seed: int, num_frames: int, num_keyframes: int, skip=()) -> list[dict]:
    return [row for name, variant in (("A", "all"), ("B", "uniform"))
            for row in ex.evaluate(ws, [], seed, (variant,), num_frames, num_keyframes, row=name)]


def _answerer_seed(ws: Workspace, seed: int, num_frames: int, num_keyframes: int, skip=()) -> list[dict]:
    ex.train(ws, "answerer_ft_random", "train_answerer", seed, keyframe_source="random")
    ex.train(ws, "answerer_finetuned", "train_answerer", seed, start_from=["localizer_pretrained"])
    rows = []
    for row, runs, variant in (("C", ["localizer_pretrained"], "localizer"),
                               ("D", ["localizer_pt_sr"], "localizer"), ("E", ["answerer_ft_random"], "uniform"),
                               ("F", ["localizer_pretrained", "answerer_finetuned"], "localizer"),
                               ("G", ["answerer_finetuned", "localizer_pt_sr"], "localizer")):
        rows += ([{COPY: row, "variant": variant, "seed": seed, "row": row}] if row in skip else
                 ex.evaluate(ws, runs, seed, (variant,), num_frames, num_keyframes, row=row))
    return rows


LOCALIZER_DAGGER = "localizer_pretrained"  # Table 8's name for Localizer†'s frames (training or inference)


def training_frames_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32, num_keyframes: int = 4,
                          jobs: int = 1, answers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 8: the Answerer fine-tuned on random frames or on Localizer†'s keyframes, read with uniform frames
    or with Localizer†'s. Uses `answerer_study`'s runs; given its rows (`answers`), the cells that are its rows E
    (random, uniform) and F (Localizer†, Localizer†) are copied from them, not evaluated again."""
    reused = {} if answers is None else {("random", "uniform"): {"row": "E"},
                                         (LOCALIZER_DAGGER, LOCALIZER_DAGGER): {"row": "F"}}
    return per_seed(ws, seeds, _training_frames_seed, num_frames, num_keyframes, tuple(reused), jobs=jobs,
                    copies=(answers, reused))


def _training_frames_seed(ws: Workspace, seed: int, num_frames: int, num_keyframes: int, skip=()) -> list[dict]:
    rows = []
    for run, training_frames in (("answerer_ft_random", "random"), ("answerer_finetuned", LOCALIZER_DAGGER)):
        for variant, inference in (("uniform", "uniform"), ("localizer", LOCALIZER_DAGGER)):
            labels = dict(training_frames=training_frames, inference_frames=inference)
            rows += ([{COPY: (training_frames, inference), "variant": variant, "seed": seed, **labels}]
                     if (training_frames, inference) in skip else
                     ex.evaluate(ws, [run, LOCALIZER_DAGGER], seed, (variant,), num_frames, num_keyframes, **labels))
    return rows


def iteration_study(ws: Workspace, seeds: Sequence[int], iterations: int = 3, num_frames: int = 32,
                    num_keyframes: int = 4) -> pd.DataFrame:
    """Table 14: round 1 is SeViLA as `answerer_study` trained it (row G: the Answerer fine-tuned with Localizer†,
    the Localizer refined by the reverse chain; the paper's round 1 equals its SeViLA row too). Each further round
    fine-tunes the current Answerer on the current Localizer's keyframes, then refines the current Localizer on
    that Answerer's pseudo-labels; each round's chain is evaluated."""
    rows = []
    for seed in _seeds(ws, seeds):
        answerer, localizer = "answerer_finetuned", "localizer_pt_sr"
        for r in range(1, (min(iterations, 2) if ws.smoke else iterations) + 1):
            if r > 1:
                ex.train(ws, f"iteration{r}_answerer", "train_answerer", seed, start_from=[localizer, answerer])
                answerer = f"iteration{r}_answerer"
                ex.train(ws, f"iteration{r}_localizer", "refine_localizer", seed, start_from=[localizer, answerer])
                localizer = f"iteration{r}_localizer"
            rows += ex.evaluate(ws, [answerer, localizer], seed, ("localizer",), num_frames, num_keyframes,
                                iteration=r)
    return pd.DataFrame(rows)


def claims(localizers: pd.DataFrame, answers: pd.DataFrame) -> dict[str, dict]:
    """The paper's training claims measured on the studies' rows (`experiments.effect`); hit-rate claims only
    where moments are known (the world; not NExT-QA & co.)."""
    accuracy = next(c for c in answers.columns if c.endswith("_avg"))
    out = {}
    for table, claimed in ((answers, ANSWERER_CLAIMS), (localizers, LOCALIZER_CLAIMS)):
        for claim, (metric, before, after) in claimed.items():
            column = accuracy if metric == "accuracy" else metric
            if column in table.columns:
                out[claim] = ex.effect(table, column, before, after)
    return out


def threshold_study(ws: Workspace, taus: Sequence[float | None], num_frames: int = 32, num_keyframes: int = 4,
                    seed: int = 0, finetuned_taus: Sequence[float | None] = (None,)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudo-labels of the zero-shot Answerer under the argmax rule (tau None) and P(gold) ≥ tau for each of
    `taus`, and of 02's fine-tuned Answerer (when its seed-`seed` run exists) under `finetuned_taus`; their
    precision/recall against the true moments (every frame of every training video), and the Localizer refined
    on each from the untrained one with Table 5's recipe (online labels; the zero-shot argmax run IS Table 5's SR
    run `localizer_refined`, reused), evaluated as in Table 5. Returns (labels, results rows)."""
    labellers = {"zero-shot Answerer": []}
    if not ws.model_with("answerer_finetuned", seed=seed)[1]:
        labellers["fine-tuned Answerer"] = ["answerer_finetuned"]
    labels, results = [], ex.evaluate(ws, [], seed, ("localizer",), num_frames, num_keyframes,
                                      labeller="(no refinement)", rule="-")
    for labeller, runs in labellers.items():
        table = ex.frame_labels(ws, ws.model_with(*runs, seed=seed)[0], num_frames)
        for tau in (finetuned_taus if runs else taus):
            rule, relabelled = ("argmax" if tau is None else f"P(gold) ≥ {tau}"), ex.relabel(table, tau)
            stats = training.pseudo_label_stats(relabelled)
            quality = ex.label_quality(relabelled, ws) if ws.world else {}
            labels.append(dict(labeller=labeller, rule=rule, tau=tau, **quality,
                               no_positive_questions=round(100 * stats["no_positive_fraction"], 1)))
            policy = {} if tau is None else dict(label_policy="threshold", tau=tau)
            name = ("localizer_refined" if not runs and tau is None
                    else f"sr_{'ft' if runs else 'zs'}_{'argmax' if tau is None else tau}")
            ex.train(ws, name, "refine_localizer", seed, start_from=runs, **policy)
            results += ex.evaluate(ws, [name], seed, ("localizer",), num_frames, num_keyframes, labeller=labeller,
                                   rule=rule)
    return pd.DataFrame(labels), pd.DataFrame(results)
