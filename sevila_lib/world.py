"""The "moments" world: tiny synthetic videos in which only a few frames answer each question.

SeViLA's premise (paper §1, §3) is that a video question usually depends on a few keyframes, so a Localizer
that picks them beats uniform sampling. Real datasets only make that likely; this world makes it true BY
CONSTRUCTION, so the whole chain (localize -> answer, pseudo-labels, refinement) can be run and checked on a
laptop CPU in minutes, with the ground-truth relevant frames known for every question.

A video is `num_frames` (32) frames of 32x32 pixels at `fps` (4). Its background is light, except for one
short dark spell. Coloured shapes (circle, square, triangle, cross, diamond x red, green, blue, yellow,
white) appear in SHORT events (3-4 frames, plus a lead-in frame or two for some), placed in random order with
random empty gaps:

* a descriptive event: a shape that appears nowhere else in the video, alone in its frames (so its colour is
  visible only there);
* a dark spell: the background turns dark, then one object appears, then the background turns light again;
* 1-2 contact events: a white square sits alone, then an object touches it and the square turns a colour;
* 1-5 objects of one "counted" shape, in 1-3 events spread over the video;
* sometimes a filler event.

Each video carries one question per family, in NExT-QA's form (lower case, 5 options ending in "."), with
the answer index uniform over 0..4 and `moments` = the runs of frames where a predicate on the frame's scene
holds (the asked object is visible, the square is being touched, ...). Every label is therefore derived
from the same scene description the pixels are rendered from:

* descriptive  "what colour is the triangle?"            relevant = frames showing the triangle
* temporal     "what colour is the cross after the background turns dark?"   relevant = dark frames showing it
               (the dark spell holds one object, so "after it turns dark" is visible in one frame)
* causal       "how does the square change when the blue circle touches it?" -> "it turns red."  relevant = contact
* counting     "how many circles appear in the video?"   relevant = every frame with a circle (spread out)

For the first three ONE relevant frame suffices and no irrelevant frame gives the answer away; counting
needs the whole video, which is where sparse keyframes must fail. Events are short, so 4 uniformly sampled
frames out of 32 see the relevant moment only about 45% of the time (`world_statistics`).

Besides QA, the world gives moment-retrieval queries on other videos (a mini QVHighlights, for localizer
pre-training, official `blip2_fmr.py`) and single-frame image-language examples on a third pool of videos (for
pre-training the mini BLIP-2 as an IMAGE model: captions, frame-level QA, yes/no). Everything is a pure
function of (seed, video id). Introduced in `notebooks/01_forward_chain.ipynb`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from . import prompts
from .records import VideoQASample

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 235), "yellow": (240, 210, 30),
           "white": (250, 250, 250)}
BACKGROUNDS = {"light": (170, 170, 160), "dark": (30, 30, 40)}
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
MOVING_SHAPES = ("circle", "triangle", "cross", "diamond")  # the square is reserved for contact events
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses",
           "diamond": "diamonds"}
NUMBERS = ("zero", "one", "two", "three", "four", "five")
FAMILIES = ("descriptive", "temporal", "causal", "counting")
CANVAS = 32  # scene coordinates are in a 32x32 canvas, scaled to `image_size` when rendered
RADIUS = 5  # half-size of every shape in canvas pixels: 11 px wide, unambiguous at 32x32
TOUCH_DISTANCE = 8  # centre distance of a touching object from the square (edges overlap by a pixel)
CAPTION_PROMPT = "Caption:"  # T5 text input of the caption pre-training examples
# Ask only questions whose options are a whole five-value domain in a fixed order (see `_options`): the
# temporal family asks for a colour, the causal family for how the square changes.
CANONICAL_ONLY = True
FRAME_QA_KINDS = (("colour", "shape", "count", "dark_colour", "square_change") if CANONICAL_ONLY
                  else ("colour", "shape", "dark", "touch", "count"))


# ---------------------------------------------------------------------------------------------------------
# Scenes: what is in one frame (the single source of truth for pixels and labels)
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Obj:
    """One object in one frame; `oid` identifies it across frames (counting counts distinct oids)."""

    oid: int
    shape: str
    colour: str
    x: int  # centre, canvas pixels
    y: int


@dataclass(frozen=True)
class FrameScene:
    background: str = "light"  # "light" | "dark"
    objects: tuple[Obj, ...] = ()

    def has(self, shape: str | None = None, colour: str | None = None) -> bool:
        return any((shape is None or o.shape == shape) and (colour is None or o.colour == colour)
                   for o in self.objects)

    def toucher(self) -> Obj | None:
        """The object touching the square in this frame, if any (edges within RADIUS of each other)."""
        for sq in (o for o in self.objects if o.shape == "square"):
            for o in self.objects:
                if o is not sq and max(abs(o.x - sq.x), abs(o.y - sq.y)) <= 2 * RADIUS:
                    return o
        return None


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    r = RADIUS
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= r - 0.5
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r + 0.5
    if shape == "triangle":  # pointing up, flat base
        return (abs(dy) <= r) & (abs(dx) <= (dy + r) / 2)
    if shape == "cross":  # a plus sign with 4-px arms
        return ((abs(dx) <= 2) & (abs(dy) <= r)) | ((abs(dy) <= 2) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: FrameScene, image_size: int = CANVAS) -> np.ndarray:
    """One frame, uint8 (H, W, 3). Objects are drawn in order (a toucher over the square)."""
    frame = np.empty((image_size, image_size, 3), np.uint8)
    frame[:] = BACKGROUNDS[scene.background]
    # Pixel centres in canvas coordinates, so any image_size draws the same scene.
    grid = (np.arange(image_size) + 0.5) * CANVAS / image_size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    for o in scene.objects:
        frame[_shape_mask(o.shape, xx - o.x, yy - o.y)] = COLOURS[o.colour]
    return frame


def caption(scene: FrameScene) -> str:
    """E.g. "a red triangle and a blue square on a dark background."."""
    where = f"{scene.background} background"
    if not scene.objects:
        return f"an empty {where}."
    toucher = scene.toucher()
    if toucher is not None:
        square = next(o for o in scene.objects if o.shape == "square")
        return f"a {toucher.colour} {toucher.shape} touching a {square.colour} square on a {where}."
    names = [f"a {o.colour} {o.shape}" for o in sorted(scene.objects, key=lambda o: (o.x, o.y))]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} on a {where}."


# ---------------------------------------------------------------------------------------------------------
# Events -> a video plan
# ---------------------------------------------------------------------------------------------------------

Event = list[FrameScene]  # the frames of one event, placed on the timeline as a block


def _positions(rng: np.random.Generator, n: int, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """A straight path through `box` (x0, x1, y0, y1): objects move a little during their event."""
    x0, x1, y0, y1 = box
    a = rng.integers([x0, y0], [x1 + 1, y1 + 1])
    b = rng.integers([x0, y0], [x1 + 1, y1 + 1])
    return [tuple(int(v) for v in np.rint(a + (b - a) * t / max(n - 1, 1))) for t in range(n)]


def _appear(rng, ids, specs: Sequence[tuple[str, str]], length: int, background: str = "light") -> Event:
    """1-2 objects (shape, colour) moving for `length` frames; two objects keep to separate halves of the
    frame, 14+ px apart, so they never touch."""
    if len(specs) == 1:
        boxes = [(6, 26, 6, 26)]
    elif rng.random() < 0.5:
        boxes = [(6, 9, 6, 26), (23, 26, 6, 26)]  # left | right
    else:
        boxes = [(6, 26, 6, 9), (6, 26, 23, 26)]  # top / bottom
    tracks = [(next(ids), s, c, _positions(rng, length, box)) for (s, c), box in zip(specs, boxes)]
    return [FrameScene(background, tuple(Obj(i, s, c, *path[t]) for i, s, c, path in tracks))
            for t in range(length)]


def _dark_spell(rng, ids, spec: tuple[str, str], length: int) -> Event:
    """The background turns dark (one empty frame), then one object appears for `length` frames."""
    return [FrameScene("dark")] + _appear(rng, ids, [spec], length, background="dark")


def _contact(rng, ids, toucher: tuple[str, str], new_colour: str, pre: int, contact: int) -> Event:
    """A white square alone for `pre` frames, then `toucher` touches it and it is `new_colour`.

    The toucher is absent before the contact, so no frame outside the contact frames reveals the cause."""
    side = int(rng.choice([-1, 1]))
    sx = int(rng.integers(6, 19) if side == 1 else rng.integers(14, 27))
    sy = int(rng.integers(6, 27))
    square, other = next(ids), next(ids)
    before = FrameScene("light", (Obj(square, "square", "white", sx, sy),))
    during = FrameScene("light", (Obj(square, "square", new_colour, sx, sy),
                                  Obj(other, *toucher, sx + side * TOUCH_DISTANCE, sy + int(rng.integers(-2, 3)))))
    return [before] * pre + [during] * contact


@dataclass
class VideoPlan:
    """A video's scenes plus the roles its questions ask about."""

    video_id: str
    scenes: list[FrameScene]
    descriptive: tuple[str, str]  # (shape, colour) of the object seen in one event only
    temporal: tuple[str, str]  # (shape, colour) of the object in the dark spell
    causal: list[tuple[str, str, str]]  # (toucher shape, toucher colour, new square colour)
    counted: str  # the shape the counting question counts


def plan_video(video_id: str, seed: int, num_frames: int = 32) -> VideoPlan:
    """Draw one video's events and lay them out on the timeline. Needs num_frames >= 32."""
    rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
    ids = itertools.count()
    colours = list(COLOURS)
    # Roles: the descriptive shape and the counted shape appear nowhere else; the other two shapes ("free")
    # fill every other role, so they never create a second answer.
    desc_shape, counted = (str(s) for s in rng.choice(MOVING_SHAPES, 2, replace=False))
    free = [s for s in MOVING_SHAPES if s not in (desc_shape, counted)]

    def free_object(avoid_colour: str | None = None) -> tuple[str, str]:
        return str(rng.choice(free)), str(rng.choice([c for c in colours if c != avoid_colour]))

    def length() -> int:  # 3 or 4 frames: 4 uniform keyframes of 32 then hit a window only ~43% of the time
        return int(rng.choice([3, 4], p=[0.85, 0.15]))

    desc_colour = str(rng.choice(colours))
    # The descriptive object is alone in its frames: a ViT trained from scratch in minutes reads colours
    # reliably but told the five shapes apart in only ~75-80% of one-object frames (measured in the mini
    # BLIP-2 work), so with a second object on screen the mini model could not say which colour is the
    # triangle's (about half right). Frames with several objects remain in the other events.
    events = [_appear(rng, ids, [(desc_shape, desc_colour)], length())]
    temporal = free_object()
    events.append(_dark_spell(rng, ids, temporal, length()))

    # Counting: 1-5 objects of the counted shape (distinct colours), in 1-3 events of 1-2 objects each.
    count = int(rng.integers(1, 6))
    groups = int(rng.integers((count + 1) // 2, min(count, 3) + 1))
    sizes = [1] * groups
    for g in rng.choice(groups, count - groups, replace=False):
        sizes[g] += 1
    count_colours = iter(rng.permutation(colours))
    for size in sizes:
        events.append(_appear(rng, ids, [(counted, str(next(count_colours))) for _ in range(size)], length()))

    # 1-2 contact events with different touchers and different new colours, then fillers while there is room.
    causal: list[tuple[str, str, str]] = []
    room = num_frames - 4  # keep a few empty frames so events are separated
    for _ in range(2):
        if causal and (rng.random() < 0.5 or sum(map(len, events)) + 6 > room):
            break
        while True:
            toucher, new = free_object(), str(rng.choice([c for c in colours if c != "white"]))
            if new != toucher[1] and all(toucher != c[:2] and new != c[2] for c in causal):
                break
        causal.append((*toucher, new))
        events.append(_contact(rng, ids, toucher, new, int(rng.integers(1, 3)), length()))
    while sum(map(len, events)) + 5 <= room and rng.random() < 0.5:
        events.append(_appear(rng, ids, [free_object()], int(rng.integers(3, 6))))

    # Random order, random empty gaps: relevant windows land anywhere in the video.
    used = sum(map(len, events))
    if used > num_frames:
        raise ValueError(f"{video_id}: events need {used} frames but the video has {num_frames}")
    gaps = rng.multinomial(num_frames - used, [1 / (len(events) + 1)] * (len(events) + 1))
    scenes: list[FrameScene] = []
    for gap, i in zip(gaps, rng.permutation(len(events))):
        scenes += [FrameScene()] * gap + events[i]
    scenes += [FrameScene()] * gaps[-1]
    return VideoPlan(video_id, scenes, (desc_shape, desc_colour), temporal, causal, counted)


# ---------------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------------

Predicate = Callable[[FrameScene], bool]


def _moments(scenes: Sequence[FrameScene], relevant: Predicate, fps: float) -> list[tuple[float, float]]:
    """Runs of frames where `relevant` holds, as inclusive [first/fps, last/fps] windows in seconds."""
    out = []
    for is_relevant, run in itertools.groupby(range(len(scenes)), key=lambda t: relevant(scenes[t])):
        if is_relevant:
            run = list(run)
            out.append((run[0] / fps, run[-1] / fps))
    return out


def _options(rng: np.random.Generator, answer: str, preferred: Sequence[str], others: Sequence[str],
             num_options: int = 5) -> tuple[list[str], int]:
    """The options and the answer's index.

    When the answer's whole domain has exactly `num_options` values (the five colours, shapes or counts), the
    options are that domain in its fixed order ("canonical options"): the answer index then follows from the
    answer itself, as it is uniform over the domain. Why: a tiny T5 trained from scratch in minutes does not
    learn to match option text against the question (measured: chance after 2,000 steps of text-only training),
    so the mini BLIP-2 could not answer at all; with canonical options it need not read them. Otherwise:
    `answer` at a uniformly drawn index among distractors, plausible ones (things in the video) first.
    """
    domain = list(dict.fromkeys(others))
    if len(domain) == num_options and answer in domain:
        return domain, domain.index(answer)
    distractors: list[str] = []
    for pool in (preferred, others):
        for text in rng.permutation(list(dict.fromkeys(pool))):
            if text != answer and text not in distractors and len(distractors) < num_options - 1:
                distractors.append(str(text))
    if len(distractors) < num_options - 1:
        raise ValueError(f"not enough distractors for {answer!r}")
    index = int(rng.integers(num_options))
    return distractors[:index] + [answer] + distractors[index:], index


def _visible(scenes: Sequence[FrameScene]) -> list[tuple[str, str]]:
    """(shape, colour) of every non-square object in the video, in order of appearance."""
    return list(dict.fromkeys((o.shape, o.colour) for s in scenes for o in s.objects if o.shape != "square"))


ALL_OBJECTS = [(s, c) for s in MOVING_SHAPES for c in COLOURS]


def video_questions(plan: VideoPlan, rng: np.random.Generator
                    ) -> list[tuple[str, str, list[str], int, Predicate]]:
    """One question per family: (family, question, options, answer index, relevance predicate)."""
    scenes, out = plan.scenes, []
    seen_colours = list(dict.fromkeys(o.colour for s in scenes for o in s.objects))

    shape, colour = plan.descriptive
    colour_unique = {o.shape for s in scenes for o in s.objects if o.colour == colour} == {shape}
    if colour_unique and rng.random() < 0.5:
        q, answer, pool, others = f"which shape is {colour}?", f"a {shape}.", [], [f"a {s}." for s in SHAPES]
        relevant: Predicate = lambda s, c=colour: s.has(colour=c)
    else:
        q, answer, pool, others = f"what colour is the {shape}?", f"{colour}.", [f"{c}." for c in seen_colours], \
            [f"{c}." for c in COLOURS]
        relevant = lambda s, sh=shape: s.has(shape=sh)
    out.append(("descriptive", q, *_options(rng, answer, pool, others), relevant))

    shape, colour = plan.temporal
    relevant = lambda s, sh=shape, c=colour: s.background == "dark" and s.has(sh, c)
    if not CANONICAL_ONLY and rng.random() < 0.5:
        q, answer = "what appears after the background turns dark?", f"a {colour} {shape}."
        pool = [f"a {c} {s}." for s, c in _visible(scenes)] + [f"a {c} {shape}." for c in COLOURS]
        others = [f"a {c} {s}." for s, c in ALL_OBJECTS]
    else:
        q, answer = f"what colour is the {shape} after the background turns dark?", f"{colour}."
        pool = [f"{c}." for s, c in _visible(scenes) if s == shape]
        others = [f"{c}." for c in COLOURS]
    out.append(("temporal", q, *_options(rng, answer, pool, others), relevant))

    t_shape, t_colour, new = plan.causal[int(rng.integers(len(plan.causal)))]
    relevant = lambda s, sh=t_shape, c=t_colour, n=new: (s.has("square", n) and (t := s.toucher()) is not None
                                                         and (t.shape, t.colour) == (sh, c))
    if not CANONICAL_ONLY and rng.random() < 0.5:
        q, answer = f"why does the square turn {new}?", f"because the {t_colour} {t_shape} touches it."
        def because(pairs):
            return [f"because the {c} {s} touches it." for s, c in pairs]
        pool = because(c[:2] for c in plan.causal) + ["because the background turns dark."] + because(_visible(scenes))
        others = because(ALL_OBJECTS)
    else:
        q, answer = f"how does the square change when the {t_colour} {t_shape} touches it?", f"it turns {new}."
        pool = [f"it turns {n}." for *_, n in plan.causal] + ["it turns white."]
        others = [f"it turns {c}." for c in COLOURS]
    out.append(("causal", q, *_options(rng, answer, pool, others), relevant))

    counted = plan.counted
    count = len({o.oid for s in scenes for o in s.objects if o.shape == counted})
    options, index = _options(rng, f"{NUMBERS[count]}.", [], [f"{n}." for n in NUMBERS[1:6]])
    out.append(("counting", f"how many {PLURALS[counted]} appear in the video?", options, index,
                lambda s, sh=counted: s.has(shape=sh)))
    return out


def moment_queries(plan: VideoPlan) -> list[tuple[str, Predicate]]:
    """Every moment-retrieval query the video supports (QVHighlights-style: no trailing '.')."""
    queries: list[tuple[str, Predicate]] = [
        (f"a {c} {s} appears", lambda f, s=s, c=c: f.has(s, c)) for s, c in _visible(plan.scenes)]
    queries.append(("the background turns dark", lambda f: f.background == "dark"))
    for s, c, n in plan.causal:
        queries.append((f"the {c} {s} touches the square",
                        lambda f, s=s, c=c: (t := f.toucher()) is not None and (t.shape, t.colour) == (s, c)))
        queries.append((f"the square turns {n}", lambda f, n=n: f.has("square", n)))
    return queries


# ---------------------------------------------------------------------------------------------------------
# Single-frame image-language examples (pre-training the mini BLIP-2 as an image model)
# ---------------------------------------------------------------------------------------------------------

class ImageExample(NamedTuple):
    frame: np.ndarray  # uint8 (H, W, 3)
    input_text: str
    target_text: str


def _frame_question(scene: FrameScene, kind: str, rng: np.random.Generator) -> tuple[str, str, list, list] | None:
    """(question, answer, plausible distractors, other distractors) about ONE frame, or None if `kind` does not
    apply to it. Phrased like the video questions where the concept exists in a single frame."""
    objs = scene.objects
    if kind == "colour" and objs:
        o = objs[int(rng.integers(len(objs)))]
        if sum(p.shape == o.shape for p in objs) == 1:
            return (f"what colour is the {o.shape}?", f"{o.colour}.", [f"{p.colour}." for p in objs],
                    [f"{c}." for c in COLOURS])
    if kind == "shape" and objs:
        o = objs[int(rng.integers(len(objs)))]
        if sum(p.colour == o.colour for p in objs) == 1:
            return f"which shape is {o.colour}?", f"a {o.shape}.", [], [f"a {s}." for s in SHAPES]
    if kind == "dark" and scene.background == "dark" and len(objs) == 1:
        o = objs[0]
        return ("what is on the dark background?", f"a {o.colour} {o.shape}.",
                [f"a {c} {o.shape}." for c in COLOURS], [f"a {c} {s}." for s, c in ALL_OBJECTS])
    if kind == "touch" and (t := scene.toucher()) is not None:
        return ("what is touching the square?", f"the {t.colour} {t.shape}.",
                [f"the {c} {t.shape}." for c in COLOURS], [f"the {c} {s}." for s, c in ALL_OBJECTS])
    # The temporal and causal video templates where ONE frame answers them (a dark frame with one object, a
    # contact frame): single-frame image QA, like BLIP-2's VQA data, still with no notion of time.
    if kind == "dark_colour" and scene.background == "dark" and len(objs) == 1:
        o = objs[0]
        return (f"what colour is the {o.shape} after the background turns dark?", f"{o.colour}.", [],
                [f"{c}." for c in COLOURS])
    if kind == "square_change" and (t := scene.toucher()) is not None:
        square = next(o for o in objs if o.shape == "square")
        return (f"how does the square change when the {t.colour} {t.shape} touches it?", f"it turns {square.colour}.",
                [], [f"it turns {c}." for c in COLOURS])
    if kind == "count":
        shape = str(rng.choice([o.shape for o in objs] if objs and rng.random() < 0.7 else SHAPES))
        n = sum(o.shape == shape for o in objs)
        return f"how many {PLURALS[shape]} are in this frame?", f"{NUMBERS[n]}.", [], [f"{w}." for w in NUMBERS[:5]]
    return None


def _yes_no(scene: FrameScene, label: str, about_background: bool, rng: np.random.Generator) -> str | None:
    """A yes/no question about the frame whose answer is `label`, or None if the frame cannot give one.
    Negatives are near misses (an absent shape-colour pair sharing a shape or a colour with the frame)."""
    if about_background:
        return "Is the background dark?" if (scene.background == "dark") == (label == prompts.YES) else None
    if label == prompts.YES:
        if not scene.objects:
            return None
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        shape, colour = o.shape, o.colour
    else:
        absent = [(s, c) for s, c in itertools.product(SHAPES, COLOURS) if not scene.has(s, c)]
        near = [(s, c) for s, c in absent if any(o.shape == s or o.colour == c for o in scene.objects)]
        shape, colour = (near or absent)[int(rng.integers(len(near or absent)))]
    return f"Is there a {colour} {shape} in the image?"


# Answerability judgements, the stand-in for what Flan-T5's instruction tuning gives real BLIP-2 for zero-shot
# localisation: "does this image show what this question needs?". The instructions are deliberately NOT
# SeViLA's localisation prompts (`prompts.LOCALIZER_PROMPTS`, `prompts.VLEP_LOCALIZER_PROMPT`) nor the kit's own
# variants in notebooks/04_ablation_prompts.ipynb (tests/test_world.py checks), so the zero-shot Localizer
# still meets its instruction for the first time, and the prompt ablation (paper Table 16) still measures
# transfer. Layouts vary (question first or last, with or without options) so that the judgement, not one
# string, is what is learnt.
ANSWERABILITY_TEMPLATES = (
    "Question: {question} Options: ({options}) Can this question be answered by looking at the picture?",
    "Question: {question} Is the picture enough to answer this?",
    "Look at the picture. Could someone answer the following question from it alone? Question: {question}",
    "Question: {question} Choices: {options} Does the picture contain the evidence to choose the right one?",
    "Is it possible to answer the question below using only this image? Question: {question} Options: ({options})",
    "Question: {question} Would this image alone let you answer it? Answer:",
)
# The single-frame forms of the descriptive, temporal and causal video questions (`video_questions`); counting
# is left out: no one frame answers it.
ANSWERABILITY_KINDS = ("colour", "shape", "dark_colour", "square_change")


def _video_question(scenes: Sequence[FrameScene], kind: str, rng: np.random.Generator
                    ) -> tuple[str, list[str], Predicate] | None:
    """A question of family `kind` that the video of `scenes` poses with a unique answer, as `video_questions`
    words it: (question, options, which frames answer it), or None if the video has no such question."""
    objects = {(o.shape, o.colour) for s in scenes for o in s.objects}
    if kind == "colour":  # a moving shape seen in one colour only
        shapes = sorted(sh for sh in MOVING_SHAPES if len({c for s, c in objects if s == sh}) == 1)
        if not shapes:
            return None
        shape = shapes[int(rng.integers(len(shapes)))]
        return f"what colour is the {shape}?", [f"{c}." for c in COLOURS], lambda f: f.has(shape=shape)
    if kind == "shape":  # a colour worn by one shape only (never the square, whose colour changes)
        colours = sorted(c for c in COLOURS if {s for s, c2 in objects if c2 == c} in ({sh} for sh in MOVING_SHAPES))
        if not colours:
            return None
        colour = colours[int(rng.integers(len(colours)))]
        return f"which shape is {colour}?", [f"a {s}." for s in SHAPES], lambda f: f.has(colour=colour)
    if kind == "dark_colour":
        dark = sorted({(o.shape, o.colour) for s in scenes if s.background == "dark" for o in s.objects})
        if not dark:
            return None
        shape, colour = dark[int(rng.integers(len(dark)))]
        return (f"what colour is the {shape} after the background turns dark?", [f"{c}." for c in COLOURS],
                lambda f: f.background == "dark" and f.has(shape, colour))
    if kind == "square_change":
        touchers = sorted({(t.shape, t.colour) for s in scenes if (t := s.toucher()) is not None})
        if not touchers:
            return None
        shape, colour = touchers[int(rng.integers(len(touchers)))]
        return (f"how does the square change when the {colour} {shape} touches it?",
                [f"it turns {c}." for c in COLOURS],
                lambda f: (t := f.toucher()) is not None and (t.shape, t.colour) == (shape, colour))
    raise ValueError(f"unknown answerability kind {kind!r}; choose from {ANSWERABILITY_KINDS}")


def _answerability(scenes: Sequence[FrameScene], kind: str, label: str, rng: np.random.Generator
                   ) -> tuple[int, str] | None:
    """(frame index, instruction text) whose answer is `label`: yes iff that ONE frame of the video answers a
    question the video poses. Negatives come from the same video, as the Localizer's do, half of them from
    frames that show something (blank frames alone would make "no" too easy)."""
    if (made := _video_question(scenes, kind, rng)) is None:
        return None
    question, options, relevant = made
    frames = [t for t, s in enumerate(scenes) if relevant(s) == (label == prompts.YES)]
    if label == prompts.NO and rng.random() < 0.5:
        frames = [t for t in frames if scenes[t].objects or scenes[t].background == "dark"] or frames
    if not frames:
        return None
    template = ANSWERABILITY_TEMPLATES[int(rng.integers(len(ANSWERABILITY_TEMPLATES)))]
    return frames[int(rng.integers(len(frames)))], template.format(question=question, options=" ".join(options))


# ---------------------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------------------

@dataclass
class WorldConfig:
    """Sizes of the mini world. QA videos carry one question per family (4 per video); moment videos carry
    `queries_per_video` queries. The three video pools (QA, moments, image pre-training) never overlap."""

    seed: int = 0
    num_frames: int = 32
    fps: float = 4.0
    image_size: int = 32  # the mini model's input size; frames are rendered at this size directly
    # 1,000 val and 1,000 test questions (250 per family), so a 3-point difference between two settings on the
    # same questions is detectable: when 20% of the questions change outcome between the settings, a paired 95%
    # CI is about +-1.96 * sqrt(0.2 / n) = +-2.8 points at n = 1,000 (+-6.2 at the former 200).
    qa_videos: dict[str, int] = field(default_factory=lambda: {"train": 150, "val": 250, "test": 250})
    moment_videos: dict[str, int] = field(default_factory=lambda: {"train": 75, "val": 25})
    queries_per_video: int = 4
    # Many pre-training videos: a ViT trained from scratch on a few thousand distinct frames memorises them
    # (measured: 97% train vs 82% val shape accuracy on 10k frames); the mini BLIP-2 sees ~40k distinct frames.
    pretrain_videos: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 40})
    image_kinds: dict[str, float] = field(default_factory=lambda: {"caption": 0.2, "qa": 0.4, "yes_no": 0.15,
                                                                   "answerable": 0.25})


class MomentsWorld:
    """The mini world: videos, QA samples, moment queries and image examples, all deterministic in the seed."""

    POOLS = {"qa": "qa_videos", "mr": "moment_videos", "pt": "pretrain_videos"}

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        if self.config.num_frames < 32:
            raise ValueError("the world's events need num_frames >= 32")
        # Deterministic, so cache per instance (lru_cache on methods would share one cache across worlds).
        self.plan = lru_cache(maxsize=None)(self._plan)
        self.render = lru_cache(maxsize=512)(self._render)

    def video_ids(self, pool: str, split: str) -> list[str]:
        """Ids like "qa-val-0007"; `pool` is "qa", "mr" (moment retrieval) or "pt" (image pre-training)."""
        sizes = getattr(self.config, self.POOLS[pool])
        if split not in sizes:
            raise ValueError(f"unknown {pool} split {split!r}; choose from {sorted(sizes)}")
        return [f"{pool}-{split}-{i:04d}" for i in range(sizes[split])]

    def _plan(self, video_id: str) -> VideoPlan:
        return plan_video(video_id, self.config.seed, self.config.num_frames)

    def scenes(self, video_id: str) -> list[FrameScene]:
        return self.plan(video_id).scenes

    def _render(self, video_id: str) -> np.ndarray:
        """All frames of a video, uint8 (T, H, W, 3). Read-only: the array is cached and shared."""
        frames = np.stack([render_scene(s, self.config.image_size) for s in self.scenes(video_id)])
        frames.flags.writeable = False
        return frames

    def _rng(self, *keys: str) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *(zlib.crc32(k.encode()) for k in keys)])

    def qa_samples(self, split: str) -> list[VideoQASample]:
        """One question per family for each QA video of `split` ("train" | "val" | "test")."""
        out = []
        for vid in self.video_ids("qa", split):
            plan = self.plan(vid)
            for j, (family, q, options, answer, relevant) in enumerate(video_questions(plan, self._rng(vid, "qa"))):
                out.append(VideoQASample(
                    question_id=f"{family}_{vid}_{j}", video=vid, question=q, options=options, answer=answer,
                    question_type=family, dataset="world", moments=_moments(plan.scenes, relevant, self.config.fps),
                    source=f"world:seed={self.config.seed}"))
        return out

    def moment_samples(self, split: str) -> list[VideoQASample]:
        """Moment-retrieval queries ("a red triangle appears") on the moment videos ("train" | "val"), named
        like `datasets.read_qvhighlights` names real QVHighlights queries."""
        out = []
        for vid in self.video_ids("mr", split):
            plan, rng = self.plan(vid), self._rng(vid, "mr")
            queries = moment_queries(plan)
            for j, q in enumerate(rng.choice(len(queries), min(self.config.queries_per_video, len(queries)),
                                             replace=False)):
                text, relevant = queries[int(q)]
                out.append(VideoQASample(
                    question_id=f"QVHighlight_{vid}_{j}", video=vid, question=text, options=[], answer=None,
                    question_type="QVHighlight", dataset="qvh", source=f"world:seed={self.config.seed}",
                    moments=_moments(plan.scenes, relevant, self.config.fps)))
        return out

    def image_examples(self, split: str, n: int, seed: int = 0, crowded_share: float = 0.0) -> list[ImageExample]:
        """`n` single-frame examples from the pre-training videos of `split` ("train" | "val").

        `crowded_share`: the share of caption and QA examples drawn from frames with two or more objects
        (most frames hold one object or none), for teaching which colour belongs to which shape.

        Kinds (mixed by `config.image_kinds`): "caption" after `CAPTION_PROMPT`; "qa", frame-level QA in the
        Answerer's format (`prompts.answerer_text` -> "Option C"); "yes_no", "Question: Is there ...? Answer:";
        "answerable", an `ANSWERABILITY_TEMPLATES` instruction -> yes/no: does this frame answer a question its
        video poses? No localisation prompt is ever used, so a zero-shot Localizer has to transfer the judgement
        to an instruction it has not seen, as real BLIP-2 does.
        """
        rng = self._rng("pt", split, str(seed))
        videos = self.video_ids("pt", split)
        kinds, weights = zip(*self.config.image_kinds.items())
        out: list[ImageExample] = []
        while len(out) < n:
            # Draw what to ask first, then frames until one fits: keeps kinds and yes/no balanced.
            kind = str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
            qa_kind = str(rng.choice(ANSWERABILITY_KINDS if kind == "answerable" else FRAME_QA_KINDS))
            label, about_background = str(rng.choice([prompts.YES, prompts.NO])), bool(rng.random() < 0.25)
            crowdable = kind == "caption" or (kind == "qa" and qa_kind in ("colour", "shape", "count"))
            least_objects = 2 if crowdable and rng.random() < crowded_share else 0
            for _ in range(10_000):
                vid, t = videos[int(rng.integers(len(videos)))], int(rng.integers(self.config.num_frames))
                scene = self.scenes(vid)[t]
                if len(scene.objects) < least_objects:
                    continue
                if kind == "caption":
                    if not scene.objects and rng.random() < 0.75:  # empty frames are common; caption a few
                        continue
                    texts = (CAPTION_PROMPT, caption(scene))
                elif kind == "qa":
                    if (made := _frame_question(scene, qa_kind, rng)) is None:
                        continue
                    question, answer, pool, others = made
                    options, index = _options(rng, answer, pool, others)
                    texts = (prompts.answerer_text(question, options), prompts.answer_target(index))
                elif kind == "answerable":  # the frame is chosen from the video, to match the question
                    if (made := _answerability(self.scenes(vid), qa_kind, label, rng)) is None:
                        continue
                    t, texts = made[0], (made[1], label)
                else:
                    if (question := _yes_no(scene, label, about_background, rng)) is None:
                        continue
                    texts = (f"Question: {question} Answer:", label)
                out.append(ImageExample(self.render(vid)[t].copy(), *texts))
                break
            else:
                raise RuntimeError(f"no pre-training frame fits {kind}/{qa_kind}")
        return out

    def texts(self) -> list[str]:
        """Every text the world can produce (all splits, all templates), for building its tokenizer."""
        out: list[str] = []
        for split in self.config.qa_videos:
            for s in self.qa_samples(split):
                out += [prompts.answerer_text(s.question, s.options), prompts.localizer_text(s.question, s.options)]
        for split in self.config.moment_videos:
            out += [prompts.moment_query_text(s.question) for s in self.moment_samples(split)]
        # The answerability instructions' own words (their questions and options are the video questions').
        out += [template.format(question="", options="") for template in ANSWERABILITY_TEMPLATES]
        # Templates with every filler word, so texts from other seeds or sizes are covered too.
        rng = np.random.default_rng(0)
        scenes = [FrameScene(bg, (Obj(0, s, c, 8, 16), Obj(1, s2, c2, 24, 16)))
                  for bg in BACKGROUNDS for (s, c), (s2, c2) in zip(itertools.product(SHAPES, COLOURS),
                                                                     itertools.product(SHAPES[::-1], COLOURS))]
        scenes += [FrameScene("dark", (Obj(0, s, c, 16, 16),)) for s, c in itertools.product(SHAPES, COLOURS)]
        scenes += [FrameScene("light", (Obj(0, "square", c, 12, 16), Obj(1, s, c, 20, 16))) for s, c in ALL_OBJECTS]
        for scene in scenes + [FrameScene(bg) for bg in BACKGROUNDS]:
            out += [CAPTION_PROMPT, caption(scene)]
            for kind in ("colour", "shape", "dark", "touch", "count", "dark_colour", "square_change"):
                if (made := _frame_question(scene, kind, rng)) is not None:
                    out.append(prompts.answerer_text(made[0], [made[1], *made[2], *made[3]][:5]))
            for label, about_background in itertools.product((prompts.YES, prompts.NO), (False, True)):
                if (question := _yes_no(scene, label, about_background, rng)) is not None:
                    out.append(f"Question: {question} Answer: {label}")
        for s, c, n in itertools.product(MOVING_SHAPES, COLOURS, NUMBERS):
            out += [f"why does the square turn {c}? because the {c} {s} touches it. it turns {c}.",
                    f"how does the square change when the {c} {s} touches it? the square turns {c}",
                    f"what colour is the {s} after the background turns dark? what appears after the background "
                    f"turns dark? a {c} {s} appears. which shape is {c}? how many {PLURALS[s]} appear in the video? "
                    f"how many {PLURALS[s]} are in this frame? {n}."]
        return out


class WorldFrameReader:
    """The kit's frame-reader protocol (`sevila_lib.video.FrameReader`) over rendered world videos."""

    def __init__(self, world: MomentsWorld):
        self.world = world

    def info(self, sample: VideoQASample):
        from .video import VideoInfo

        return VideoInfo(num_frames=self.world.config.num_frames, fps=self.world.config.fps)

    def read(self, sample: VideoQASample, indices: Sequence[int]) -> np.ndarray:
        return self.world.render(str(sample.video))[np.asarray(indices, dtype=int)]


def relevant_frames(sample: VideoQASample, num_frames: int, fps: float) -> list[int]:
    """Indices i of the video's frames with i / fps inside one of the sample's moments."""
    from .video import relevant_frame_mask

    return [i for i, hit in enumerate(relevant_frame_mask(range(num_frames), fps, sample.moments)) if hit]


def write_world_videos(world: MomentsWorld, split: str, out_dir: str | Path, pool: str = "qa",
                       samples: Sequence[VideoQASample] | None = None) -> Path:
    """Write a split's videos as mp4 (`<out_dir>/videos/<id>.mp4`) and its samples as unified JSON
    (`<out_dir>/<pool>_<split>.json`), so the world can also go through the normal file path. Returns the JSON.
    `samples`: only these questions of the split (and only their videos)."""
    from .video import write_video

    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = world.qa_samples(split) if pool == "qa" else world.moment_samples(split)
    for vid in dict.fromkeys(s.video for s in samples):
        write_video(out_dir / "videos" / f"{vid}.mp4", np.asarray(world.render(vid)), world.config.fps)
    path = out_dir / f"{pool}_{split}.json"
    try:
        from .datasets import write_unified_json
    except ImportError:  # the datasets module is optional here: fall back to the records as plain dicts
        path.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    else:
        write_unified_json(samples, path)
    return path


def world_statistics(world: MomentsWorld, split: str = "val", num_frames: int = 32, k: int = 4) -> pd.DataFrame:
    """Per family: how often k uniform keyframes out of `num_frames` uniformly sampled frames (both by the
    official segment-midpoint rule) contain a relevant frame (`uniform_hit_rate`) or a frame of EVERY moment
    (`uniform_sees_all`), and how many of the `num_frames` sampled frames are relevant on average."""
    from .video import relevant_frame_mask, segment_frame_indices

    cfg = world.config
    sampled, _ = segment_frame_indices(cfg.num_frames, cfg.fps, num_frames)
    picks, _ = segment_frame_indices(len(sampled), cfg.fps, k)
    rows = []
    for s in world.qa_samples(split):
        mask = relevant_frame_mask(sampled, cfg.fps, s.moments)
        keyframes = [sampled[p] for p in picks]
        rows.append({"question_type": s.question_type, "hit": any(mask[p] for p in picks),
                     # every moment seen (what counting needs; the same as `hit` for one moment)
                     "all": all(relevant_frame_mask(keyframes, cfg.fps, [m]).count(True) for m in s.moments),
                     "relevant": sum(mask)})
    table = pd.DataFrame(rows).groupby("question_type", sort=False).agg(
        questions=("hit", "size"), uniform_hit_rate=("hit", "mean"), uniform_sees_all=("all", "mean"),
        mean_relevant_frames=("relevant", "mean"))
    table["relevant_fraction"] = table["mean_relevant_frames"] / num_frames
    return table.reset_index()


def main(argv: Sequence[str] | None = None) -> None:
    from .video import frame_count

    parser = argparse.ArgumentParser(prog="python -m sevila_lib.world", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stats"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-frames", type=frame_count, default=32)
    parser.add_argument("-k", type=frame_count, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = MomentsWorld(WorldConfig(seed=args.seed))
    print(f"world seed={args.seed}, split={args.split}: {args.k} uniform keyframes of {args.num_frames} frames")
    print(world_statistics(world, args.split, args.num_frames, args.k).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
