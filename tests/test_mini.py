"""The shipped mini BLIP-2 loads by name through the Hugging Face BLIP-2 path and runs the chain."""
import pytest
import torch

from sevila_lib import checkpoints, mini, paths, prompts
from sevila_lib.video import frames_to_tensor
from sevila_lib.world import MomentsWorld, WorldConfig, WorldFrameReader


def test_shipped_mini_model_loads_by_name_and_answers():
    model, report = checkpoints.from_hf_blip2("mini")
    assert not report.missing and not report.unexpected
    assert (paths.MINI_MODEL_DIR / "README.md").read_text().count("%") >= 5  # the card carries measured accuracy
    for a, b in zip(model.localizer.parameters(), model.answerer.parameters()):
        assert torch.equal(a, b)  # both bridges start from the one BLIP-2 Q-Former
    tokens = model.tokenizer.convert_ids_to_tokens(model.tokenizer("Frame 1: ", add_special_tokens=False)["input_ids"])
    assert tokens[-1] == "▁"
    world = MomentsWorld()
    sample = world.qa_samples("val")[0]
    frames = frames_to_tensor(WorldFrameReader(world).read(sample, list(range(0, 32, 2))), model.config.image_size)
    out = model.forward_chain(model.encode_frames(frames[None]), [prompts.sample_qa_text(sample)],
                              [prompts.sample_loc_text(sample)], 5, 4)
    assert out.option_probs.shape == (1, 5) and out.keyframes.shape == (1, 4)


def test_load_mini_names_the_missing_folder(tmp_path):
    try:
        mini.load_mini(tmp_path)
    except FileNotFoundError as err:
        assert "make mini-model" in str(err)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_pretraining_is_bit_for_bit_deterministic(tmp_path):
    """The same command gives the same weights: two short pre-training runs write identical safetensors."""
    config = mini.PretrainConfig(single_examples=48, set_examples=16, steps=3, batch_size=8, warmup_steps=2)
    digests = []
    for run in ("a", "b"):
        mini.pretrain(config, tmp_path / run, log=lambda *_: None)
        digests.append(mini.file_digest(tmp_path / run / "model.safetensors"))
    assert digests[0] == digests[1]
    shipped = mini.file_digest(paths.MINI_MODEL_DIR / "model.safetensors")
    assert digests[0] != shipped  # 3 steps are not the shipped model: the digest tells checkpoints apart


def test_shipped_mini_model_reads_a_relevant_frame():
    """The card's target, recomputed on the first 50 val videos (the card uses all 250; a video depends on its id
    only, so these are the same videos at any split size): the shipped model answers val video questions from
    ONE relevant frame."""
    accuracy = mini.relevant_frame_accuracy(mini.load_mini(), MomentsWorld(WorldConfig(qa_videos={"val": 50})))
    assert set(accuracy) == {"descriptive", "temporal", "causal"}
    assert all(value >= 0.9 for value in accuracy.values()), accuracy


def test_zero_shot_localization_compares_the_localizer_with_uniform_frames():
    """The card's zero-shot section, on a few val videos: paired over the same questions, counting left out of
    the hit-rate; the card itself carries the full-val numbers."""
    world = MomentsWorld(WorldConfig(qa_videos={"train": 1, "val": 3, "test": 1}))
    z = mini.zero_shot_localization(mini.load_mini(), world)
    assert z.questions == 12 and z.hit_rate_delta["questions"] == 9 and z.accuracy_delta["questions"] == 12
    assert 0 <= z.localizer_hit_rate <= 100 and 0 <= z.uniform_hit_rate <= 100
    assert z.hit_rate_delta["delta"] == pytest.approx(z.localizer_hit_rate - z.uniform_hit_rate)
    card = (paths.MINI_MODEL_DIR / "README.md").read_text()
    assert "Zero-shot keyframe selection" in card and "image answerability" in card
