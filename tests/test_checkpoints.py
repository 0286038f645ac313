"""Checkpoint formats: the kit's bridges, Hugging Face BLIP-2 directories, official LAVIS `.pth` files."""
import collections

import pytest
import torch

from sevila_lib import checkpoints, prompts
from tests.conftest import QUESTIONS, make_tiny_model

QA = [prompts.answerer_text(q, o) for q, o in QUESTIONS]
LOC = [prompts.localizer_text(q, o) for q, o in QUESTIONS]


def chain(model, frames):
    out = model.forward_chain(model.encode_frames(frames), QA, LOC, 5, 3)
    return out.frame_scores, out.option_logits


def assert_same_outputs(a, b, frames):
    for x, y in zip(chain(a, frames), chain(b, frames)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_bridges_round_trip_is_exact(tokenizer, frames, tmp_path):
    trained, fresh = make_tiny_model(tokenizer, 1), make_tiny_model(tokenizer, 1)
    with torch.no_grad():
        trained.localizer.query_tokens.add_(1.0)
        trained.answerer.projection.bias.add_(0.5)
    checkpoints.save_bridges(trained, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridges.safetensors", "sevila_config.json"]
    report = checkpoints.load_bridges(fresh, tmp_path)
    assert not report.missing and not report.unexpected
    assert_same_outputs(trained, fresh, frames)


def test_hf_blip2_directory_round_trip(tokenizer, frames, tmp_path):
    model = make_tiny_model(tokenizer, 2)
    checkpoints.save_hf_blip2(model, tmp_path)
    loaded, report = checkpoints.from_hf_blip2(tmp_path)
    assert not report.missing and not report.unexpected
    # Both bridges of the loaded model are BLIP-2's Q-Former, i.e. the saved answerer.
    for a, b in zip(loaded.localizer.parameters(), model.answerer.parameters()):
        assert torch.equal(a, b)
    features = model.encode_frames(frames)
    torch.testing.assert_close(loaded.encode_frames(frames), features, rtol=0, atol=0)
    torch.testing.assert_close(loaded.answer(features[:, :3], QA, 5), model.answer(features[:, :3], QA, 5),
                               rtol=0, atol=0)
    assert loaded.llm.lm_head.weight is not loaded.llm.shared.weight  # untied, as Flan-T5


def test_lavis_layout_round_trip(tokenizer, frames, tmp_path):
    source, target = make_tiny_model(tokenizer, 3), make_tiny_model(tokenizer, 4)
    state = checkpoints.kit_to_lavis(source)
    # The official layout: EVA q/v biases, `_loc` twins, t5_model.*, no merged qkv bias.
    assert "visual_encoder.blocks.0.attn.q_bias" in state and "Qformer_loc.bert.embeddings.LayerNorm.weight" in state
    assert "t5_proj.weight" in state and "ln_vision_loc.bias" in state and "query_tokens" in state
    assert not any(k.startswith(("vision_encoder", "localizer", "answerer", "llm.")) for k in state)
    path = tmp_path / "sevila_like.pth"
    torch.save({"model": state}, path)
    report = checkpoints.load_lavis(target, path)
    assert not report.missing and not report.unexpected
    assert_same_outputs(source, target, frames)


def test_lavis_text_side_keys_are_ignored_and_gaps_reported(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    state = checkpoints.kit_to_lavis(model, include_frozen=False)
    state = {k: v for k, v in state.items() if not k.startswith(("Qformer_loc", "query_tokens_loc", "t5_proj_loc",
                                                                 "ln_vision_loc"))}
    state["Qformer.cls.predictions.bias"] = torch.zeros(3)
    state["Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(2, 2)
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(4)[None]
    state["something_else"] = torch.zeros(1)
    path = tmp_path / "answerer_only.pth"
    torch.save({"model": state}, path)
    report = checkpoints.load_lavis(model, path)
    assert len(report.ignored) == 3 and report.unexpected == ["something_else"]
    assert any(k.startswith("localizer.") for k in report.missing)
    with pytest.raises(ValueError, match="does not hold localizer weights"):
        checkpoints.load_lavis(model, path, require=("localizer.",))


def test_a_file_of_another_model_size_names_itself_and_loads_nothing(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    state = checkpoints.kit_to_lavis(model)
    state["t5_proj_loc.weight"] = torch.zeros(state["t5_proj_loc.weight"].shape[0] + 1,
                                              state["t5_proj_loc.weight"].shape[1])
    state["query_tokens_loc"] = torch.full_like(state["query_tokens_loc"], 7.0)  # fits: must not be copied either
    path = tmp_path / "other_size.pth"
    torch.save({"model": state}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"other_size\.pth: 1 weight\(s\) have another shape than the model's .*"
                                         r"localizer\.projection\.weight .*nothing was loaded"):
        checkpoints.load_lavis(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class NotATensor:
    pass


def test_file_with_pickled_objects_is_refused(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    path = tmp_path / "pickled.pth"
    torch.save({"model": checkpoints.kit_to_lavis(model), "config": NotATensor()}, path)
    with pytest.raises(ValueError, match="refused to load.*pickled"):
        checkpoints.load_lavis(model, path)


def test_qkv_bias_merge_puts_zeros_for_keys():
    q, v = torch.ones(4), torch.full((4,), 2.0)
    renamed, _, _ = checkpoints.lavis_to_kit(collections.OrderedDict(
        {"visual_encoder.blocks.5.attn.q_bias": q, "visual_encoder.blocks.5.attn.v_bias": v}))
    assert renamed["vision_encoder.encoder.layers.5.self_attn.qkv.bias"].tolist() == [1] * 4 + [0] * 4 + [2] * 4


def test_saved_tokenizer_keeps_the_official_token_sequence(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = checkpoints.load_tokenizer(tmp_path)
    for text in ["Frame 1: ", QA[0], "Option C"]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.convert_ids_to_tokens(loaded("Frame 1: ", add_special_tokens=False)["input_ids"])[-1] == "▁"
    assert loaded.pad_token_id == 0 and loaded.eos_token_id == 1


def test_truncated_files_name_their_path(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    checkpoints.save_bridges(model, tmp_path / "run")
    bridges = tmp_path / "run" / checkpoints.BRIDGES_FILE
    bridges.write_bytes(bridges.read_bytes()[:-100])  # a copy cut short
    with pytest.raises(ValueError, match=rf"{bridges}: truncated or corrupt safetensors file \(\d+ bytes;"):
        checkpoints.load_bridges(model, tmp_path / "run")
    path = tmp_path / "sevila_pretrained.pth"
    torch.save({"model": checkpoints.kit_to_lavis(model, include_frozen=False)}, path)
    whole = path.read_bytes()
    for cut in (len(whole) // 2, 100):  # torch says "[Errno 22] Invalid argument" / "central directory"
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=rf"{path}: truncated or corrupt checkpoint file \({cut} bytes;"):
            checkpoints.load_lavis(model, path)


def test_full_disk_says_so_and_keeps_the_previous_file(tokenizer, tmp_path, monkeypatch):
    import errno

    model = make_tiny_model(tokenizer)
    checkpoints.save_bridges(model, tmp_path)
    before = (tmp_path / checkpoints.BRIDGES_FILE).read_bytes()

    def full(message):
        def write(*args, **kwargs):
            raise message
        return write

    # Python's own ENOSPC, and safetensors' Rust error text for the same thing.
    for error in (OSError(errno.ENOSPC, "No space left on device"),
                  Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                            'space left on device" })')):
        monkeypatch.setattr("safetensors.torch.save_file", full(error))
        with pytest.raises(OSError, match=r"disk full while writing .*bridges\.safetensors \(\d+ bytes free on its "
                                          r"disk\); nothing was written") as raised:
            checkpoints.save_bridges(model, tmp_path)
        assert raised.value.errno == errno.ENOSPC
    assert (tmp_path / checkpoints.BRIDGES_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridges.safetensors", "sevila_config.json"]  # no tmp left
    monkeypatch.setattr("safetensors.torch.save_file", full(ValueError("not a disk problem")))
    with pytest.raises(ValueError, match="not a disk problem"):
        checkpoints.save_bridges(model, tmp_path)
