"""The kit's versions of the paper's result tables, each a DataFrame with the paper's numbers beside ours.

| function                  | paper                                | what it measures here                               |
|---------------------------|--------------------------------------|-----------------------------------------------------|
| `main_results`            | Tables 1 (fine-tuned), 2 (zero-shot) | per-family accuracy, paired bootstrap Δ vs Answerer |
| `main_result_predictions` | Tables 1, 2                          | the prediction tables of those settings (02's runs) |
| `moment_retrieval`        | Table 4                              | moment retrieval, official QVHighlights R1 / mAP    |
| `localizer_frames`        | appendix Table 12                    | single- vs multi-frame ("long image") Localizer     |
| `compute_cost`            | appendix Table 15                    | time per question, peak memory, parameters          |

On the mini profile the columns are the moments world's families, on the paper profile the dataset's
(`metrics.summarize`); the paper's columns are NExT-QA's (or the same dataset's), so on the mini profile the two are
compared in structure (which setting beats which), never in value.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import metrics, paper, paths, prompts
from .chain import FrameBatch
from .evaluation import Evaluator
from .gpu_check import process_memory_kib
from .model import SeViLA
from .records import VideoQASample
from .scorers import LocalizerScorer, Scorer
from .video import frames_to_tensor, relevant_frame_mask

ANSWERER = "BLIP-2^concat (Answerer)"  # the baseline row of Tables 1 and 2 ("... (4)" with its frame count)


# ---------------------------------------------------------------------------------------------------------------
# Tables 1 and 2: main results
# ---------------------------------------------------------------------------------------------------------------


def _paper_label(row: pd.Series) -> str:
    return f"{row['model']} ({row['frames']})"  # "SeViLA† (32→4)", the way the paper names its rows


def main_results(tables: Mapping[str, pd.DataFrame], finetuned: bool = False, baseline: str | None = None,
                 n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per setting of paper Table 1 (`finetuned=True`) or Table 2, from its per-question predictions table.

    Our columns: questions, the accuracy columns `metrics.summarize` gives (the world's four families and
    `world_avg`, or the dataset's), and the paired-bootstrap difference of accuracy from the `baseline` setting
    (`metrics.paired_bootstrap`: the same resampled questions score both rows) with its 95% CI; the baseline is
    the setting named "BLIP-2^concat (Answerer) (k)" unless given. Paper columns:
    the same-named setting's row of the paper table ("<model> (<frames>)", e.g. "SeViLA† (32→4)"), in the columns
    we have or, on the mini world, NExT-QA's. Settings the paper does not list get NaN there.
    """
    baseline = baseline or next((label for label in tables if label.startswith(ANSWERER)), None)
    if baseline not in tables:
        raise KeyError(f"baseline {baseline!r} is not one of the settings {list(tables)}")
    rows = []
    for label, table in tables.items():
        row = {"setting": label, "questions": table["question_id"].nunique(), **metrics.summarize(table).to_dict()}
        diff = metrics.paired_bootstrap(table, tables[baseline], "accuracy", n_boot, seed)
        if label != baseline:
            row.update({"Δ vs Answerer": diff["delta"], "Δ low": diff["low"], "Δ high": diff["high"]})
        rows.append(row)
    ours = pd.DataFrame(rows)
    reported = paper.paper_table("table1" if finetuned else "table2")
    reported["setting"] = reported.apply(_paper_label, axis=1)
    accuracy_columns = [c for c in ours.columns if c in paper.QA_COLUMNS]
    paper_columns = accuracy_columns or paper.NEXTQA  # the mini world has no paper columns: show NExT-QA's
    beside = reported[["setting", *paper_columns]].rename(columns={c: f"{c} (paper)" for c in paper_columns})
    out = ours.merge(beside, on="setting", how="left")
    out.attrs["baseline"] = baseline
    return out


def main_result_predictions(ws, finetuned: bool = False, seed: int = 0, split: str = "val", num_frames: int = 32,
                            num_keyframes: int = 4) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The predictions table of each setting of paper Table 2 (zero-shot) or Table 1 (`finetuned=True`), made with
    the bridges of notebook 02's training runs (`Workspace.model_with`); returns (tables, settings skipped because
    a run is missing). Settings and runs (notebook 02's names; Table 3's rows in brackets):

    zero-shot: voting over k uniform frames and concat of them with the untrained BLIP-2 (row B); SeViLA† =
    Localizer† (`localizer_pretrained`) → zero-shot Answerer (row C); plus the untrained Localizer, which the paper
    has in Table 5, not Table 2. Fine-tuned: the Answerer fine-tuned on random frames (`answerer_ft_random`, row E)
    votes and reads k uniform frames; SeViLA† = Localizer† → `answerer_finetuned` (row F); SeViLA = the refined
    Localizer (`localizer_pt_sr`) → `answerer_finetuned` (row G). The paper fine-tunes its voting baseline per
    frame; the kit has no such run, so the random-frame Answerer votes.
    """
    k, n = num_keyframes, num_frames
    if finetuned:
        answerer = ["answerer_ft_random"]
        chains = {f"SeViLA† ({n}→{k})": ["localizer_pretrained", "answerer_finetuned"],
                  f"SeViLA ({n}→{k})": ["answerer_finetuned", "localizer_pt_sr"]}
    else:
        answerer = []
        chains = {f"SeViLA, untrained Localizer ({n}→{k})": [], f"SeViLA† ({n}→{k})": ["localizer_pretrained"]}
    tables, skipped = {}, []
    model, missing = ws.model_with(*answerer, seed=seed)
    if missing:
        skipped += [f"BLIP-2^voting ({k})", f"BLIP-2^concat (Answerer) ({k})"]
    else:
        ev = ws.evaluator(split, model=model)
        tables[f"BLIP-2^voting ({k})"] = metrics.vote(ev.per_frame(k))
        tables[f"BLIP-2^concat (Answerer) ({k})"] = ev.run("uniform", n, k)
    for label, runs in chains.items():
        model, missing = ws.model_with(*runs, seed=seed)
        if missing:
            skipped.append(f"{label} (missing runs: {', '.join(missing)})")
        else:
            tables[label] = ws.evaluator(split, model=model).run("localizer", n, k)
    return tables, skipped


# ---------------------------------------------------------------------------------------------------------------
# Table 4: moment retrieval with the Localizer
# ---------------------------------------------------------------------------------------------------------------


def frame_spans(indices: Sequence[int], fps: float, stride_frames: float = 1.0) -> list[tuple[float, float]]:
    """Runs of consecutive frame indices as time spans in seconds, frame i covering [i/fps, (i+stride)/fps): the
    convention of `metrics.merge_frame_predictions` and of QVHighlights, whose 2-s clip i covers [2i, 2i+2)."""
    spans, run = [], []
    for i in sorted(set(int(i) for i in indices)):
        if run and i != run[-1] + 1:
            spans.append(run)
            run = []
        run.append(i)
    spans += [run] if run else []
    return [(r[0] / fps, (r[-1] + stride_frames) / fps) for r in spans]


def ground_truth_windows(sample: VideoQASample, num_video_frames: int, fps: float) -> list[tuple[float, float]]:
    """The relevant windows as spans of the frames that cover them. The world writes a moment as [first/fps,
    last/fps] of its relevant frames (ends included, so a one-frame moment has no length); the predicted spans
    cover whole frames, so both sides are written the same way: the frames the official rule calls relevant
    (`video.relevant_frame_mask`), each covering 1/fps seconds."""
    mask = relevant_frame_mask(range(num_video_frames), fps, sample.moments)
    return frame_spans([i for i, hit in enumerate(mask) if hit], fps)


def localizer_windows(probabilities: Sequence[float], indices: Sequence[int], fps: float, threshold: float = 0.5,
                      max_gap: int = 6) -> list[tuple[float, float, float]]:
    """Ranked scored spans from the Localizer's per-frame P(yes): a frame says "yes" when P(yes) ≥ `threshold`
    (0.5: "yes" beats "no", the Localizer's own answer), and the kit's span rule merges them (paper appendix, span
    threshold `max_gap` = 6 frames). When no frame says yes, the most probable frame alone is the prediction,
    since the official evaluator needs at least one window per query."""
    p = np.asarray(probabilities, dtype=float)
    times = np.asarray(indices, dtype=float) / fps
    stride = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps
    flags = p >= threshold if (p >= threshold).any() else p == p.max()
    return metrics.merge_frame_predictions(flags, frame_times=times, frame_stride_seconds=stride, scores=p,
                                           max_gap=max_gap)


@torch.inference_mode()
def localizer_probabilities(model: SeViLA, samples: Sequence[VideoQASample], reader, num_frames: int = 32,
                            profile: str = "mini", batch_size: int = 8) -> dict[str, tuple[list[int], Tensor]]:
    """The Localizer's P(yes) for each query's `num_frames` uniformly sampled frames: question id -> (frame
    indices, P(yes) per frame). Moment queries have no options, so the Evaluator's QA path is not used; its ViT
    feature cache and frame sampling are."""
    ev = Evaluator(model, samples, reader, cache_dir=paths.CACHE_DIR / "features" / profile, progress=False)
    out = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        indices = [ev.frame_indices(s, num_frames) for s in batch]
        features = torch.stack([ev.features(s, idx) for s, idx in zip(batch, indices)]).to(model.device)
        probs = model.localize(features, [prompts.sample_loc_text(s) for s in batch], "yes_no_prob").float().cpu()
        out.update({s.question_id: (idx, p) for s, idx, p in zip(batch, indices, probs)})
    return out


def moment_retrieval(ws, models: Mapping[str, SeViLA], split: str = "val", num_frames: int = 32,
                     threshold: float = 0.5, max_gap: int = 6, samples: Sequence[VideoQASample] | None = None,
                     baselines: bool = True) -> pd.DataFrame:
    """Paper Table 4 on the workspace's moment-retrieval queries (`ws.moments[split]`, or `samples`): for each
    model, its Localizer's P(yes) on `num_frames` uniformly sampled frames (32 = every frame of a world video),
    merged into ranked spans (`localizer_windows`) and scored with the official QVHighlights R1@0.5, R1@0.7 and
    mAP over IoU 0.5:0.05:0.95 (`metrics.qvh_moment_retrieval`), beside the paper's Localizer row (QVHighlights
    test split).

    `baselines` adds two rows computed the same way: "whole video" (one window over the entire video: what the
    metric gives for no localisation) and, on the world, "ground-truth frames" (the true relevant frames through
    the same span rule: the ceiling the rule leaves). On the world the ground truth is written as frame coverage
    (`ground_truth_windows`); real QVHighlights windows are used as they are.
    """
    samples = list(samples if samples is not None else ws.moments.get(split, []))
    if not samples:
        raise ValueError(f"no moment-retrieval queries for split {split!r} (paper profile: pass samples= read "
                         f"with datasets.read_annotations('qvh', ...))")
    on_world = ws.world is not None
    reader = ws.moment_reader
    info = {s.question_id: reader.info(s) for s in samples}
    truth = {s.question_id: (ground_truth_windows(s, info[s.question_id].num_frames, info[s.question_id].fps)
                             if on_world else list(s.moments)) for s in samples}
    predictions: dict[str, dict[str, list]] = {}
    yes_share = {}
    for label, model in models.items():
        probs = localizer_probabilities(model, samples, reader, num_frames, ws.profile)
        predictions[label] = {q: localizer_windows(p.tolist(), idx, info[q].fps, threshold, max_gap)
                              for q, (idx, p) in probs.items()}
        yes_share[label] = 100 * float(np.mean([(p >= threshold).float().mean() for _, p in probs.values()]))
    if baselines:
        predictions["whole video (no localisation)"] = {
            s.question_id: [(0.0, info[s.question_id].num_frames / info[s.question_id].fps, 1.0)] for s in samples}
        if on_world:
            predictions["ground-truth frames (span rule)"] = {
                s.question_id: metrics.merge_frame_predictions(
                    relevant_frame_mask(range(info[s.question_id].num_frames), info[s.question_id].fps, s.moments),
                    frame_stride_seconds=1 / info[s.question_id].fps, max_gap=max_gap) for s in samples}
    rows = [{"model": label, "queries": len(samples), **metrics.qvh_moment_retrieval(spans, truth),
             "frames said yes (%)": yes_share.get(label, np.nan)} for label, spans in predictions.items()]
    ours = pd.DataFrame(rows)
    reported = paper.paper_table("table4").set_index("model").loc["Localizer (SeViLA)"]
    localizers = ours.model.isin(list(models))  # the paper's Localizer row goes beside ours, not the baselines
    for ours_column, paper_column in (("R1@0.5", "qvh_r1_at_0.5"), ("R1@0.7", "qvh_r1_at_0.7"), ("mAP", "qvh_map")):
        ours[f"{ours_column} (paper)"] = np.where(localizers, reported[paper_column], np.nan)
    return ours


# ---------------------------------------------------------------------------------------------------------------
# Table 12: a Localizer that reads several frames as one image
# ---------------------------------------------------------------------------------------------------------------


class MultiFrameLocalizerScorer(Scorer):
    """Paper appendix Table 12's multi-frame Localizer: groups of `frames_per_image` consecutive sampled frames are
    read as ONE image, and each group gets one "yes" score, shared by its frames.

    The paper concatenates the frames into one long image for the Q-Former. Here the ViT has already encoded each
    frame (it is frozen and shared), so the long image is the frames' ViT tokens side by side: the Localizer's
    Q-Former cross-attends to all g × P tokens at once and its 32 (mini: 8) queries summarise the group, then T5
    answers the localisation prompt once per group, exactly as for a single frame. (A ViT run on a real long image
    would also mix the frames in its own attention; the kit's feature cache keeps frames apart.) With top-k
    selection and k a multiple of g, the keyframes are the frames of the best k / g groups. With g = 1 this is the
    single-frame Localizer, number for number.
    """

    name = "localizer_multiframe"
    per_frame = False  # a frame's score is its group's: it depends on its neighbours
    parts = ("vision_encoder", "localizer", "llm")

    def __init__(self, frames_per_image: int = 4, kind: str = "logit", prompt: str = "official"):
        super().__init__(frames_per_image=frames_per_image, prompt=prompt)
        self.frames_per_image, self.kind, self.prompt = frames_per_image, kind, prompt

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        b, t, p, d = batch.features.shape
        g = self.frames_per_image
        if t % g:
            raise ValueError(f"{t} sampled frames do not split into groups of {g}")
        long_images = batch.features.reshape(b * (t // g), g * p, d)  # consecutive frames' tokens, one sequence
        visual = batch.model.localizer(long_images).unflatten(0, (b, t // g))  # (B, T/g, Q, D)
        scores = batch.model.localize_visual(visual, batch.questions.loc_texts(self.prompt), self.kind)
        return scores.repeat_interleave(g, dim=1)  # (B, T): each frame carries its group's score


def localizer_frames(ev: Evaluator, frames_per_image: int = 4, num_frames: int = 32, num_keyframes: int = 4,
                     finetuned: bool = False, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paper appendix Table 12: the Answerer's accuracy with keyframes from the single-frame Localizer (official)
    and from the multi-frame one (`MultiFrameLocalizerScorer`), on the same questions of `ev`, with keyframe
    hit-rate where the moments are known and the paired-bootstrap difference multi − single (95% CI); beside
    the paper's NExT-QA Avg (zero-shot or `finetuned` Answerer: pass `ev` over that model)."""
    tables = {1: ev.select(LocalizerScorer(), "top_k", num_frames, num_keyframes, variant="localizer"),
              frames_per_image: ev.select(MultiFrameLocalizerScorer(frames_per_image), "top_k", num_frames,
                                          num_keyframes, variant=f"localizer, {frames_per_image} frames per image")}
    reported = paper.paper_table("table12")
    reported = reported[reported.answerer == ("fine-tuned" if finetuned else "zero-shot")]
    rows = []
    for frames, table in tables.items():
        row = {"answerer": "fine-tuned" if finetuned else "zero-shot", "localizer_frames": frames,
               "questions": len(table), **metrics.summarize(table).to_dict()}
        if table["relevant_frames"].notna().any():
            row["hit_rate"] = 100 * metrics.per_question(table, "hit_rate").mean()
        if frames != 1:
            diff = metrics.paired_bootstrap(table, tables[1], "accuracy", n_boot, seed)
            row.update({"Δ vs single-frame": diff["delta"], "Δ low": diff["low"], "Δ high": diff["high"]})
        rows.append(row)
    beside = reported[["localizer_frames", "nextqa_avg"]].rename(columns={"nextqa_avg": "nextqa_avg (paper)"})
    return pd.DataFrame(rows).merge(beside, on="localizer_frames", how="left")  # `reported` holds one answerer


# ---------------------------------------------------------------------------------------------------------------
# Table 15: compute cost
# ---------------------------------------------------------------------------------------------------------------


def _reset_peak_memory(device: torch.device) -> int:
    """Start a fresh peak-memory mark; returns the memory in use now (bytes). CUDA: the allocator's counters.
    CPU: the kernel's peak-RSS mark (VmHWM), reset through /proc/self/clear_refs where Linux allows it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the mark then holds the process's peak so far: the added memory reads as 0
    return process_memory_kib("VmRSS") * 1024


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return process_memory_kib("VmHWM") * 1024


def parameter_counts(model: SeViLA) -> dict[str, dict[str, int]]:
    """Parameters of what each setting runs: the Answerer alone (ViT + Answerer bridge + T5) and SeViLA (the same
    plus the Localizer bridge). Trainable = the bridges the setting trains (the ViT and T5 stay frozen)."""
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    frozen = count(model.vision_encoder) + count(model.llm)
    answerer, localizer = count(model.answerer), count(model.localizer)
    return {"Answerer": {"total": frozen + answerer, "trainable": answerer},
            "SeViLA": {"total": frozen + answerer + localizer, "trainable": answerer + localizer}}


def compute_cost(ev: Evaluator, questions: int = 8, num_frames: int = 32, num_keyframes: int = 4,
                 repeats: int = 5) -> pd.DataFrame:
    """Paper appendix Table 15 measured here: SeViLA (the Localizer scores n frames, the Answerer reads the top k)
    against the Answerer alone (k uniform frames), per question from the frames read, ViT included, as the paper
    times a sample. Both run side by side in this process on the same first `questions` of `ev`, one question at a
    time: one warm-up pass each, then `repeats` passes alternating the two; the time is the median pass over the
    questions. Memory: on CUDA the allocator's peak (`torch.cuda.max_memory_allocated`, weights included, as the
    paper's GB); on CPU the process's peak resident memory (VmHWM, weights and everything else in the process
    included), with "added" = peak − memory in use before the pass, the part the setting itself needs. After the
    warm-up the CPU allocator reuses what it freed, so for the mini model "added" is usually 0 MB for both: the
    mini settings' working sets are too small to show on CPU, and only the GPU peak separates them.
    """
    model, reader = ev.model, ev.reader
    device = model.device
    samples = list(ev.samples[:questions])
    prepared = [(s, ev.frame_indices(s, num_frames), ev.frame_indices(s, num_keyframes),
                 question_texts(s)) for s in samples]

    def frames(sample, indices):
        return frames_to_tensor(reader.read(sample, indices), model.config.image_size)[None]

    def sevila():
        for sample, many, _, (qa, loc, options) in prepared:
            model.forward_chain(model.encode_frames(frames(sample, many)), [qa], [loc], options, num_keyframes)

    def answerer():
        for sample, _, few, (qa, _, options) in prepared:
            model.answer(model.encode_frames(frames(sample, few)), [qa], options)

    settings = {f"SeViLA ({num_frames}→{num_keyframes})": sevila, f"Answerer ({num_keyframes})": answerer}
    seconds = {label: [] for label in settings}
    peak = {label: 0 for label in settings}
    added = {label: 0 for label in settings}
    with torch.inference_mode():
        for run in settings.values():
            run()  # warm-up: kernels, allocator, the reader's cache
        for _ in range(repeats):
            for label, run in settings.items():
                before = _reset_peak_memory(device)
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[label].append((time.perf_counter() - start) / len(prepared))
                top = _peak_memory(device)
                peak[label], added[label] = max(peak[label], top), max(added[label], top - before)
    params = parameter_counts(model)
    reported = paper.paper_table("table15").set_index("model")
    memory = "GPU allocator peak" if device.type == "cuda" else "peak RSS of the process"
    rows = []
    for label in settings:
        counts = params["SeViLA" if label.startswith("SeViLA") else "Answerer"]
        paper_label = "SeViLA (32→4)" if label.startswith("SeViLA") else "Answerer (4)"
        rows.append({"model": label, "questions": len(prepared), "seconds_per_question": statistics.median(seconds[label]),
                     "memory_gb": peak[label] / 1e9, "memory_added_mb": added[label] / 1e6, "memory_kind": memory,
                     "parameters_million": counts["total"] / 1e6, "trainable_million": counts["trainable"] / 1e6,
                     "seconds_per_sample (paper)": reported.loc[paper_label, "seconds_per_sample"],
                     "memory_gb (paper)": reported.loc[paper_label, "memory_gb"],
                     "parameters_billion (paper)": reported.loc[paper_label, "parameters_billion"]})
    out = pd.DataFrame(rows)
    ratio = out.seconds_per_question.iloc[0] / out.seconds_per_question.iloc[1]
    paper_ratio = reported.loc["SeViLA (32→4)", "seconds_per_sample"] / reported.loc["Answerer (4)", "seconds_per_sample"]
    out.attrs["time_ratio"], out.attrs["paper_time_ratio"] = float(ratio), float(paper_ratio)
    out["time ratio vs Answerer"] = [ratio, 1.0]
    out["time ratio (paper)"] = [paper_ratio, 1.0]
    return out


def question_texts(sample: VideoQASample) -> tuple[str, str, int]:
    """The Answerer's text, the Localizer's text and the option count of a question."""
    return prompts.sample_qa_text(sample), prompts.sample_loc_text(sample), len(sample.options)


def recorded_cost(reports_dir: str | Path = paths.REPORTS_DIR) -> pd.DataFrame:
    """Table 15 rows that `python -m sevila_lib.gpu_check` measured at real shapes (random weights) and wrote to
    `reports/gpu_check.md`, labelled with that file; empty when it has not been run. Nothing is typed by hand."""
    path = Path(reports_dir) / "gpu_check.md"
    if not path.exists():
        return pd.DataFrame()
    lines = path.read_text(encoding="utf-8").splitlines()
    title = lines[0].lstrip("# ").strip() if lines else "GPU check"
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("## Inference beside"))
    except StopIteration:
        return pd.DataFrame()
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| setting"))
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append({"model": cells[0], "batch": int(cells[1]), "seconds_per_question": float(cells[2]),
                     "memory_gb": float(cells[3]), "memory_kind": lines[header].split("|")[4].strip(),
                     "source": f"{path.name}: {title}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# What the tables say, in sentences computed from them
# ---------------------------------------------------------------------------------------------------------------


def _versus(row: Mapping, baseline: str, delta: str = "Δ vs Answerer") -> str:
    low, high = row[delta.replace("Δ vs Answerer", "Δ low").replace("Δ vs single-frame", "Δ low")], row["Δ high"]
    verdict = metrics.verdict({"low": low, "high": high})
    return f"{row[delta]:+.1f} points vs {baseline} [95% CI {low:+.1f}, {high:+.1f}]: {verdict}"


def findings(table2: pd.DataFrame, table1: pd.DataFrame, table4: pd.DataFrame, table12: pd.DataFrame,
             table15: pd.DataFrame) -> str:
    """The notebook's closing text: each comparison of Tables 1, 2, 4, 12 and 15 as a sentence with its number,
    CI and verdict, next to what the paper reports. Empty tables (missing runs) are said to be missing."""
    lines = []
    for name, table in (("Table 2 (zero-shot)", table2), ("Table 1 (fine-tuned)", table1)):
        if table.empty:
            lines.append(f"{name}: not computed (its runs are missing: run 02_reverse_chain).")
            continue
        baseline = table.attrs.get("baseline", ANSWERER)
        for row in table[table.setting != baseline].to_dict("records"):
            paper_avg = row.get("nextqa_avg (paper)")
            said = "" if pd.isna(paper_avg) else f" (paper, NExT-QA Avg: {paper_avg:.1f})"
            lines.append(f"{name}: {row['setting']}{said}: {_versus(row, baseline)}.")
    if not table4.empty:
        for row in table4.to_dict("records"):
            lines.append(f"Table 4: {row['model']}: R1@0.5 {row['R1@0.5']:.1f}, R1@0.7 {row['R1@0.7']:.1f}, "
                         f"mAP {row['mAP']:.1f} on {row['queries']} queries.")
    for row in table12[table12.localizer_frames != 1].to_dict("records") if not table12.empty else []:
        single = table12[(table12.answerer == row["answerer"]) & (table12.localizer_frames == 1)]
        paper_gap = row["nextqa_avg (paper)"] - float(single["nextqa_avg (paper)"].iloc[0])
        lines.append(f"Table 12 ({row['answerer']} Answerer): reading {row['localizer_frames']} frames as one image: "
                     f"{_versus(row, 'the single-frame Localizer', 'Δ vs single-frame')} (paper: {paper_gap:+.1f}).")
    measured = table15[table15.get("source", "measured here") == "measured here"] if not table15.empty else table15
    if len(measured):
        lines.append(f"Table 15: SeViLA takes {measured['time ratio vs Answerer'].iloc[0]:.2f}× the Answerer's time "
                     f"per question here (paper: {measured['time ratio (paper)'].iloc[0]:.2f}×).")
    return "\n".join(lines)
