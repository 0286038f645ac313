"""The mini world: determinism, label correctness (checked against the scene of every frame), balance, splits."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from sevila_lib import prompts
from sevila_lib.records import VideoQASample
from sevila_lib.world import (ANSWERABILITY_TEMPLATES, COLOURS, FAMILIES, NUMBERS, PLURALS, MomentsWorld,
                              WorldConfig, WorldFrameReader, relevant_frames, render_scene, world_statistics,
                              write_world_videos)

SMALL = dict(qa_videos={"train": 40, "val": 15, "test": 15}, moment_videos={"train": 10, "val": 5},
             pretrain_videos={"train": 20, "val": 5})


@pytest.fixture(scope="module")
def world() -> MomentsWorld:
    return MomentsWorld(WorldConfig(**SMALL))


@pytest.fixture(scope="module")
def samples(world) -> list[VideoQASample]:
    return [s for split in ("train", "val", "test") for s in world.qa_samples(split)]


def test_same_seed_same_world_and_different_seed_different_world(world):
    again, other = MomentsWorld(WorldConfig(**SMALL)), MomentsWorld(WorldConfig(seed=1, **SMALL))
    assert again.qa_samples("val") == world.qa_samples("val")
    assert again.moment_samples("val") == world.moment_samples("val")
    assert np.array_equal(again.render("qa-val-0003"), world.render("qa-val-0003"))
    assert [e.input_text for e in again.image_examples("train", 20, seed=3)] == \
        [e.input_text for e in world.image_examples("train", 20, seed=3)]
    assert other.qa_samples("val") != world.qa_samples("val")
    assert not np.array_equal(other.render("qa-val-0003"), world.render("qa-val-0003"))


def test_rendered_video_shape_and_scene_agree(world):
    video = world.render("qa-train-0000")
    assert video.shape == (32, 32, 32, 3) and video.dtype == np.uint8
    for t, scene in enumerate(world.scenes("qa-train-0000")):
        colours = {tuple(c) for c in video[t].reshape(-1, 3)}
        assert colours == {COLOURS[o.colour] for o in scene.objects} | {(170, 170, 160) if scene.background ==
                                                                        "light" else (30, 30, 40)}
    assert render_scene(world.scenes("qa-train-0000")[0], 64).shape == (64, 64, 3)


def test_samples_are_well_formed(samples):
    assert Counter(s.question_type for s in samples) == {f: len(samples) // 4 for f in FAMILIES}
    assert len({s.question_id for s in samples}) == len(samples)
    for s in samples:
        assert s.dataset == "world" and s.question_id.startswith(f"{s.question_type}_{s.video}_")
        assert len(s.options) == 5 == len(set(s.options)) and all(o.endswith(".") for o in s.options)
        assert s.question.endswith("?") and s.moments


def test_answer_index_is_uniform():
    world = MomentsWorld(WorldConfig(qa_videos={"train": 250, "val": 1, "test": 1}))
    counts = Counter(s.answer for s in world.qa_samples("train"))  # 1000 questions
    assert set(counts) == set(range(5)) and all(150 <= n <= 250 for n in counts.values()), counts


def _objects(scene):
    return {(o.shape, o.colour) for o in scene.objects}


def _touch(scene):
    """(toucher shape, toucher colour, square colour) or None."""
    t = scene.toucher()
    return None if t is None else (t.shape, t.colour, next(o.colour for o in scene.objects if o.shape == "square"))


def test_labels_visible_in_every_relevant_frame_and_absent_elsewhere(world, samples):
    """An independent reading of each question against the per-frame scene description."""
    for s in samples:
        scenes = world.scenes(s.video)
        relevant = set(relevant_frames(s, len(scenes), world.config.fps))
        answer = s.options[s.answer].rstrip(".")
        inside = [scenes[t] for t in sorted(relevant)]
        outside = [scenes[t] for t in range(len(scenes)) if t not in relevant]
        assert inside, s.question_id
        q = s.question
        if m := re.fullmatch(r"what colour is the (\w+)\?", q):
            assert all((m[1], answer) in _objects(f) for f in inside)
            assert not any(o.shape == m[1] for f in outside for o in f.objects)
        elif m := re.fullmatch(r"which shape is (\w+)\?", q):
            assert all((answer.split()[1], m[1]) in _objects(f) for f in inside)
            assert not any(o.colour == m[1] for f in outside for o in f.objects)
        elif q == "what appears after the background turns dark?":
            _, colour, shape = answer.split()
            assert all(f.background == "dark" and _objects(f) == {(shape, colour)} for f in inside)
            assert not any(f.background == "dark" and f.objects for f in outside)
        elif m := re.fullmatch(r"what colour is the (\w+) after the background turns dark\?", q):
            assert all(f.background == "dark" and (m[1], answer) in _objects(f) for f in inside)
            assert not any(f.background == "dark" and f.objects for f in outside)
        elif m := re.fullmatch(r"why does the square turn (\w+)\?", q):
            colour, shape = re.fullmatch(r"because the (\w+) (\w+) touches it", answer).groups()
            assert all(_touch(f) == (shape, colour, m[1]) for f in inside)
            assert not any(("square", m[1]) in _objects(f) or (_touch(f) or "")[:2] == (shape, colour)
                           for f in outside)
        elif m := re.fullmatch(r"how does the square change when the (\w+) (\w+) touches it\?", q):
            new = answer.removeprefix("it turns ")
            assert all(_touch(f) == (m[2], m[1], new) for f in inside)
            assert not any((_touch(f) or "")[:2] == (m[2], m[1]) for f in outside)
        elif m := re.fullmatch(r"how many (\w+) appear in the video\?", q):
            shape = next(k for k, v in PLURALS.items() if v == m[1])
            assert NUMBERS.index(answer) == len({o.oid for f in scenes for o in f.objects if o.shape == shape})
            assert all(any(o.shape == shape for o in f.objects) for f in inside)
            assert not any(o.shape == shape for f in outside for o in f.objects)
        else:
            pytest.fail(f"unexpected question {q!r}")


def test_moment_queries_match_the_scenes(world):
    for s in world.moment_samples("train"):
        assert s.dataset == "qvh" and s.options == [] and s.answer is None and s.moments
        scenes = world.scenes(s.video)
        relevant = set(relevant_frames(s, len(scenes), world.config.fps))
        if m := re.fullmatch(r"a (\w+) (\w+) appears", s.question):
            truth = {t for t, f in enumerate(scenes) if (m[2], m[1]) in _objects(f)}
        elif s.question == "the background turns dark":
            truth = {t for t, f in enumerate(scenes) if f.background == "dark"}
        elif m := re.fullmatch(r"the (\w+) (\w+) touches the square", s.question):
            truth = {t for t, f in enumerate(scenes) if (_touch(f) or "")[:2] == (m[2], m[1])}
        else:
            m = re.fullmatch(r"the square turns (\w+)", s.question)
            truth = {t for t, f in enumerate(scenes) if ("square", m[1]) in _objects(f)}
        assert relevant == truth and len(truth) < len(scenes), s.question_id


def test_splits_and_pools_are_disjoint(world):
    pools = {(pool, split): set(world.video_ids(pool, split)) for pool, split in
             [("qa", "train"), ("qa", "val"), ("qa", "test"), ("mr", "train"), ("mr", "val"), ("pt", "train"),
              ("pt", "val")]}
    ids = [v for vs in pools.values() for v in vs]
    assert len(ids) == len(set(ids))
    assert {s.video for s in world.qa_samples("val")} == pools["qa", "val"]
    assert {s.video for s in world.moment_samples("train")} == pools["mr", "train"]
    # Different ids give different videos, not copies.
    assert not np.array_equal(world.render("qa-train-0000"), world.render("qa-val-0000"))


def test_default_val_and_test_splits_have_power():
    """1,000 questions per evaluation split, families balanced, so a 3-point difference is detectable."""
    world = MomentsWorld()
    for split in ("val", "test"):
        counts = Counter(s.question_type for s in world.qa_samples(split))
        assert counts == {f: counts["descriptive"] for f in FAMILIES} and sum(counts.values()) >= 1000


def test_uniform_keyframes_miss_localised_moments_half_the_time():
    world = MomentsWorld(WorldConfig(qa_videos={"train": 1, "val": 300, "test": 1}))
    stats = world_statistics(world, "val", num_frames=32, k=4).set_index("question_type")
    for family in ("descriptive", "temporal", "causal"):
        assert stats.loc[family, "uniform_hit_rate"] <= 0.52, stats
        assert 3 <= stats.loc[family, "mean_relevant_frames"] <= 4
    assert stats.loc["counting", "uniform_sees_all"] < 0.4  # counting needs more than sparse keyframes


def test_image_examples(world):
    examples = world.image_examples("train", 300, seed=0)
    assert len(examples) == 300
    localizer_instructions = [*prompts.LOCALIZER_PROMPTS.values(), prompts.VLEP_LOCALIZER_PROMPT]
    yes_no, answerable, asked = Counter(), Counter(), Counter()
    for frame, text, target in examples:
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
        assert not any(p in text for p in localizer_instructions)
        if text.endswith(prompts.ANSWERER_INSTRUCTION):
            assert target in [prompts.answer_target(i) for i in range(5)]
            options = re.findall(r"Option [A-E]: ([^.]*)\.", text)
            answer = options["ABCDE".index(target[-1])].removeprefix("it turns ")
            if answer in COLOURS:  # the answer's colour is on screen (on a contact frame: the square's new colour)
                changes = "how does the square change" in text
                asked["how does the square change" if changes else text.split("?")[0]] += 1
                assert (frame.reshape(-1, 3) == COLOURS[answer]).all(-1).any()
            if "after the background turns dark" in text:
                assert tuple(frame[0, 0]) == (30, 30, 40)
        elif m := re.fullmatch(r"Question: Is there a (\w+) (\w+) in the image\? Answer:", text):
            yes_no[target] += 1
            if target == prompts.YES:  # the colour is on screen
                assert (frame.reshape(-1, 3) == COLOURS[m[1]]).all(-1).any()
        elif text == "Question: Is the background dark? Answer:":
            yes_no[target] += 1
            assert (tuple(frame[0, 0]) == (30, 30, 40)) == (target == prompts.YES)
        elif target in (prompts.YES, prompts.NO):
            answerable[target] += 1
            assert any(text.startswith(t.split("{")[0]) and text.endswith(t.split("}")[-1])
                       for t in ANSWERABILITY_TEMPLATES), text
        else:
            assert text == "Caption:" and target.endswith("background.")
    for counts in (yes_no, answerable):
        assert counts[prompts.YES] > 0.35 * sum(counts.values()) and counts[prompts.NO] > 0.35 * sum(counts.values())
    # the temporal and causal video templates appear as single-frame questions
    assert asked["how does the square change"] and any("after the background turns dark" in q for q in asked)


def _own_prompts_of_notebook_04() -> list[str]:
    """The `own_prompts` literal of 04_ablation_prompts' parameters cell (read, so the test follows the notebook)."""
    import ast

    import nbformat

    from sevila_lib import paths

    cell = next(c for c in nbformat.read(paths.NOTEBOOKS_DIR / "04_ablation_prompts.ipynb", 4).cells
                if "parameters" in c.metadata.get("tags", []))
    node = next(n for n in ast.parse(cell.source).body
                if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "own_prompts")
    return ast.literal_eval(node.value)


def test_pretraining_never_shows_a_localisation_prompt():
    """Zero-shot localisation must transfer to an unseen instruction: no localisation prompt (the paper's three
    of Table 16, VLEP's, QVHighlights' option line, the 04 notebook's own variants) is in any pre-training text."""
    own = _own_prompts_of_notebook_04()
    assert len(own) >= 2
    forbidden = [*prompts.LOCALIZER_PROMPTS.values(), prompts.VLEP_LOCALIZER_PROMPT, prompts.QVH_OPTIONS, *own]
    world = MomentsWorld(WorldConfig(**SMALL, image_kinds={"caption": 0.1, "qa": 0.3, "yes_no": 0.2,
                                                           "answerable": 0.4}))
    texts = [e.input_text for e in world.image_examples("train", 2000, seed=0)]
    instructions = [t for t in texts if t.startswith(("Question: what", "Question: which", "Question: how", "Look",
                                                      "Is it")) and not t.endswith(prompts.ANSWERER_INSTRUCTION)]
    assert len(instructions) > 600 and len(set(instructions)) > 100  # many answerability instructions
    lowered = [t.lower() for t in texts]
    for prompt in forbidden:
        assert not any(prompt.lower() in t for t in lowered), prompt
    assert not any(p.lower() in t.lower() for p in forbidden for t in ANSWERABILITY_TEMPLATES)


def test_answerability_labels_say_whether_the_frame_answers():
    """yes iff the frame shows what the question needs (the same predicates as the video questions' moments)."""
    world = MomentsWorld(WorldConfig(**SMALL, image_kinds={"answerable": 1.0}))
    asked = Counter()
    for frame, text, target in world.image_examples("train", 200, seed=2):
        dark = tuple(frame[0, 0]) == (30, 30, 40)
        seen = {tuple(c) for c in frame.reshape(-1, 3)}
        if m := re.search(r"what colour is the (\w+) after the background turns dark\?", text):
            asked["temporal"] += 1
            if target == prompts.YES:
                assert dark and len(seen) > 1
        elif re.search(r"how does the square change when the (\w+) (\w+) touches it\?", text):
            asked["causal"] += 1
            if target == prompts.YES:
                assert len(seen) >= 3  # background, square and toucher
        elif m := re.search(r"which shape is (\w+)\?", text):
            asked["descriptive"] += 1
            assert (COLOURS[m[1]] in seen) == (target == prompts.YES)
        else:
            assert re.search(r"what colour is the (\w+)\?", text), text
            asked["descriptive"] += 1
            if target == prompts.YES:
                assert len(seen) > 1
    assert set(asked) == {"descriptive", "temporal", "causal"}


def test_crowded_share_draws_frames_with_several_objects():
    captions_only = MomentsWorld(WorldConfig(**SMALL, image_kinds={"caption": 1.0}))
    captions = [target for _, _, target in captions_only.image_examples("train", 40, seed=0, crowded_share=1.0)]
    assert all(" and " in c or "touching" in c for c in captions)  # two or more objects in every frame


def test_frame_reader(world):
    sample = world.qa_samples("val")[0]
    reader = WorldFrameReader(world)
    info = reader.info(sample)
    assert (info.num_frames, info.fps) == (32, 4.0)
    frames = reader.read(sample, [3, 1, 3])
    assert frames.shape == (3, 32, 32, 3) and np.array_equal(frames[0], world.render(sample.video)[3])


def test_write_world_videos_round_trips_through_files(tmp_path):
    from sevila_lib.datasets import read_unified_json
    from sevila_lib.video import VideoFileReader

    world = MomentsWorld(WorldConfig(qa_videos={"train": 1, "val": 2, "test": 1}))
    path = write_world_videos(world, "val", tmp_path)
    back = read_unified_json(path, dataset="world")
    samples = world.qa_samples("val")
    assert [(s.question_id, s.options, s.answer, s.question_type, s.moments) for s in back] == \
        [(s.question_id, s.options, s.answer, s.question_type, s.moments) for s in samples]
    reader = VideoFileReader(tmp_path / "videos")
    assert reader.info(back[0]).num_frames == 32
    decoded = reader.read(back[0], list(range(32))).astype(int)
    assert np.abs(decoded - world.render(back[0].video)).mean() < 6  # lossy H.264, near-lossless settings
