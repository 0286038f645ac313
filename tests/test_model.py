"""The model on a tiny random config: shapes, read-outs against generate(), keyframe selection."""
import pytest
import torch

from sevila_lib import prompts, scoring
from sevila_lib.model import SeViLA
from tests.conftest import QUESTIONS, make_tiny_model

QA = [prompts.answerer_text(q, o) for q, o in QUESTIONS]
LOC = [prompts.localizer_text(q, o) for q, o in QUESTIONS]


def test_answer_tokens_follow_the_tokenizer(tokenizer):
    tokens = scoring.AnswerTokens.from_tokenizer(tokenizer)
    assert tokenizer.convert_ids_to_tokens(tokens.yes_id) == "▁yes"
    assert tokenizer.convert_ids_to_tokens(list(tokens.letter_ids)) == [f"▁{c}" for c in "ABCDE"]
    assert tokenizer.convert_ids_to_tokens(tokens.option_word_id) == "▁Option"
    # "Frame 1: " keeps its trailing "▁" token, as with the real T5 tokenizer.
    assert tokenizer.convert_ids_to_tokens(tokenizer("Frame 1: ", add_special_tokens=False)["input_ids"])[-1] == "▁"


def test_shapes_of_every_stage(tiny_model, frames):
    features = tiny_model.encode_frames(frames)
    assert features.shape == (2, 6, (16 // 8) ** 2 + 1, 24)
    assert tiny_model.localize(features, LOC).shape == (2, 6)
    assert tiny_model.answer(features[:, :4], QA, 5).shape == (2, 5)
    assert tiny_model.answer_each_frame(features, QA, 5).shape == (2, 6, 5)
    out = tiny_model.forward_chain(features, QA, LOC, num_options=5, num_keyframes=4)
    assert out.keyframes.shape == (2, 4) and out.option_probs.shape == (2, 5)
    assert torch.all(out.keyframes[:, 1:] > out.keyframes[:, :-1])  # temporal order
    torch.testing.assert_close(out.option_probs.sum(-1), torch.ones(2))


def test_only_bridges_are_trainable(tiny_model):
    trainable = {n.split(".")[0] for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"localizer", "answerer"}
    tiny_model.train()
    assert not tiny_model.vision_encoder.training and not tiny_model.llm.training
    assert tiny_model.localizer.training


def test_select_keyframes_temporal_order_and_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2, 0.9]])
    assert scoring.select_keyframes(scores, 2).tolist() == [[1, 3]]  # tie among 1,3,5 → earliest two
    assert scoring.select_keyframes(scores, 4).tolist() == [[1, 2, 3, 5]]
    assert scoring.select_keyframes(torch.zeros(1, 5), 3).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError):
        scoring.select_keyframes(scores, 7)


def test_one_step_yes_score_equals_generate_first_step(tiny_model, frames):
    features = tiny_model.encode_frames(frames)
    b, t = features.shape[:2]
    visual = tiny_model.localizer(features.flatten(0, 1)).unflatten(0, (b, t))
    embeds, mask = tiny_model.single_frame_inputs(visual, LOC)
    ours = scoring.yes_scores(tiny_model.llm, embeds, mask, tiny_model.answer_tokens)
    gen = tiny_model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=30, num_beams=1,
                                  do_sample=False, min_length=1, output_scores=True, output_logits=True,
                                  return_dict_in_generate=True)
    torch.testing.assert_close(ours, gen.scores[0][:, tiny_model.answer_tokens.yes_id], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiny_model.localize(features, LOC).flatten(), ours)
    probs = scoring.yes_scores(tiny_model.llm, embeds, mask, tiny_model.answer_tokens, kind="yes_no_prob")
    assert torch.all((probs > 0) & (probs < 1))


def test_official_readout_equals_the_greedy_generate_path(tiny_model, frames):
    features = tiny_model.encode_frames(frames)[:, :4]
    visual = tiny_model.answerer(features.flatten(0, 1)).unflatten(0, (2, 4))
    embeds, mask = tiny_model.keyframe_inputs(visual, QA)
    letters = list(tiny_model.answer_tokens.letter_ids)
    gen = tiny_model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=3, min_new_tokens=3,
                                  num_beams=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    expected = gen.logits[1][:, letters]
    torch.testing.assert_close(tiny_model.answer(features, QA, 5, readout="official"), expected,
                               rtol=1e-5, atol=1e-5)


def test_teacher_forced_readout_reads_the_letter_after_option(tiny_model, frames):
    features = tiny_model.encode_frames(frames)[:, :4]
    visual = tiny_model.answerer(features.flatten(0, 1)).unflatten(0, (2, 4))
    embeds, mask = tiny_model.keyframe_inputs(visual, QA)
    tokens = tiny_model.answer_tokens
    decoder = torch.tensor([[0, tokens.option_word_id]] * 2)
    logits = tiny_model.llm(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder).logits
    torch.testing.assert_close(tiny_model.answer(features, QA, 5, readout="teacher_forced"),
                               logits[:, 1, list(tokens.letter_ids)], rtol=1e-5, atol=1e-5)


def test_mixed_option_counts_cannot_pick_missing_letters(tiny_model, frames):
    features = tiny_model.encode_frames(frames)[:, :3]
    logits = tiny_model.answer(features, QA, [5, 2])
    assert torch.isinf(logits[1, 2:]).all() and torch.isfinite(logits[0]).all()
    assert logits.argmax(-1)[1] < 2


def test_keyframe_inputs_layout(tiny_model, frames, tokenizer):
    features = tiny_model.encode_frames(frames)[:, :2]
    visual = tiny_model.answerer(features.flatten(0, 1)).unflatten(0, (2, 2))
    embeds, mask = tiny_model.keyframe_inputs(visual, QA)
    prefix = tokenizer("Frame 1: ", add_special_tokens=False)["input_ids"]
    q = tiny_model.config.num_query_tokens
    text_len = prompts.encode_prompts(tokenizer, QA)["input_ids"].shape[1]
    assert embeds.shape[1] == 2 * (len(prefix) + q) + text_len
    emb = tiny_model.llm.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0, : len(prefix)], emb[prefix])  # "Frame 1: " comes first
    torch.testing.assert_close(embeds[0, len(prefix): len(prefix) + q], visual[0, 0])


def test_forward_chain_is_deterministic(tokenizer, frames):
    a, b = make_tiny_model(tokenizer, seed=3), make_tiny_model(tokenizer, seed=3)
    fa, fb = a.encode_frames(frames), b.encode_frames(frames)
    out_a = a.forward_chain(fa, QA, LOC, 5, 2)
    out_b = b.forward_chain(fb, QA, LOC, 5, 2)
    assert torch.equal(out_a.option_logits, out_b.option_logits) and torch.equal(out_a.keyframes, out_b.keyframes)


def test_losses_backpropagate_into_one_bridge_only(tiny_model, frames):
    features = tiny_model.encode_frames(frames)
    tiny_model.train()
    loss = tiny_model.localizer_loss(features, LOC, torch.tensor([[1, 0, 0, 1, 0, 0], [0] * 6]).bool())
    loss.backward()
    assert tiny_model.localizer.query_tokens.grad is not None
    assert tiny_model.answerer.query_tokens.grad is None
    loss = tiny_model.answerer_loss(features[:, :4], QA, [2, 0])
    assert torch.isfinite(loss)
    assert isinstance(tiny_model, SeViLA)


def test_a_vision_encoder_built_from_a_shape_starts_with_random_weights(tokenizer):
    """transformers initialises BLIP-2's ViT with std 1e-10 (real weights are always loaded); a ViT trained
    from scratch (the mini BLIP-2) or timed with random weights (benchmarks) must not start degenerate."""
    vit = make_tiny_model(tokenizer).vision_encoder
    assert 0.005 < vit.embeddings.patch_embedding.weight.std().item() < 0.1
    tokens = vit(pixel_values=torch.randn(1, 3, 16, 16)).last_hidden_state[0]
    assert (tokens[1:] - tokens[1:].mean(0)).abs().max() > 1e-3  # patch tokens differ from one another


def test_a_model_sharing_frozen_parts_trains_its_own_bridges(tiny_model, frames):
    twin = tiny_model.sharing_frozen_parts()
    assert twin.vision_encoder is tiny_model.vision_encoder and twin.llm is tiny_model.llm
    assert twin.localizer is not tiny_model.localizer and twin.answerer is not tiny_model.answerer
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.no_grad():
        twin.localizer.query_tokens.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert not torch.equal(twin.localizer.query_tokens, tiny_model.localizer.query_tokens)
    features = tiny_model.encode_frames(frames)
    assert not torch.equal(twin.localize(features, LOC), tiny_model.localize(features, LOC))


def test_a_tokenizer_that_drops_the_frame_prefix_space_is_refused(tokenizer):
    import copy

    from tokenizers import pre_tokenizers

    from sevila_lib.config import preset

    # What transformers 5's T5Tokenizer does to T5's tokenizer.json: a whitespace split before the Metaspace.
    dropping = copy.deepcopy(tokenizer)
    dropping.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    assert dropping.convert_ids_to_tokens(dropping("Frame 1: ", add_special_tokens=False)["input_ids"])[-1] != "▁"
    with pytest.raises(ValueError, match=r"drops the trailing '▁' of 'Frame 1: '.*checkpoints\.load_tokenizer"):
        SeViLA(preset("tiny", vocab_size=len(dropping)), dropping)
