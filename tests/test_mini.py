"""The shipped mini BLIP-2 loads by name through the Hugging Face BLIP-2 path and runs the chain."""
import torch

from sevila_lib import checkpoints, mini, paths, prompts
from sevila_lib.video import frames_to_tensor
from sevila_lib.world import MomentsWorld, WorldFrameReader


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
