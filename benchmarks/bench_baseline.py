"""Reference code paths the benchmarks compare against, kept here so every before/after ratio is measured in the
same run.

* The official localizer read-out: `generate()` per question over its frames, `scores[0][:, yes_id]`.
* The kit BEFORE the per-question T5 batches of `SeViLA.each_question_single_frames` (commit 6ec1e85):
  `localize` / `answer_each_frame` built ONE T5 batch of B×T single-frame sequences, every text padded to the
  longest of the batch. Copied verbatim from that version of `sevila_lib/model.py`.
* A candidate NOT applied to the library: the first decoder step with the cross-attention keys/values folded
  into the query (`folded_first_step_logits`); see `bench_profile.py` for why it stays out.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from sevila_lib import scoring
from sevila_lib.model import ChainOutput, SeViLA


# ---- the official read-out ------------------------------------------------------------------------------
def generate_scores(model: SeViLA, embeds: Tensor, mask: Tensor, max_new_tokens: int) -> tuple[Tensor, int]:
    """The official localizer call on one question's T sequences: (yes logits (T,), decoder steps run)."""
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=1,
                             do_sample=False, min_length=1, output_scores=True, return_dict_in_generate=True)
    return out.scores[0][:, model.answer_tokens.yes_id].float(), len(out.scores)


def official_localize(model: SeViLA, features: Tensor, loc_texts: Sequence[str], max_new_tokens: int):
    """Per question: localizer bridge over its frames, T5 inputs, `generate`. -> (scores (B, T), mean steps)"""
    scores, steps = [], []
    for i, text in enumerate(loc_texts):
        visual = model.localizer(features[i]).unsqueeze(0)
        embeds, mask = model.single_frame_inputs(visual, [text])
        s, n = generate_scores(model, embeds, mask, max_new_tokens)
        scores.append(s)
        steps.append(n)
    return torch.stack(scores), sum(steps) / len(steps)


# ---- the kit before per-question T5 batches -------------------------------------------------------------
def localize_before(model: SeViLA, features: Tensor, loc_texts: Sequence[str], kind: str = "logit") -> Tensor:
    b, t = features.shape[:2]
    visual = model.localizer(features.flatten(0, 1)).unflatten(0, (b, t))
    embeds, mask = model.single_frame_inputs(visual, loc_texts)
    return scoring.yes_scores(model.llm, embeds, mask, model.answer_tokens, kind).view(b, t)


def answer_each_frame_before(model: SeViLA, features: Tensor, qa_texts: Sequence[str],
                             num_options: int | Sequence[int], readout: str = "teacher_forced") -> Tensor:
    b, t = features.shape[:2]
    visual = model.answerer(features.flatten(0, 1)).unflatten(0, (b, t))
    embeds, mask = model.single_frame_inputs(visual, qa_texts)
    per_frame = [n for n in model._option_counts(num_options, b) for _ in range(t)]
    return model._option_logits(embeds, mask, per_frame, readout).unflatten(0, (b, t))


@torch.inference_mode()
def forward_chain_before(model: SeViLA, features: Tensor, qa_texts: Sequence[str], loc_texts: Sequence[str],
                         num_options: int | Sequence[int], num_keyframes: int = 4,
                         readout: str = "official") -> ChainOutput:
    frame_scores = localize_before(model, features, loc_texts)
    keyframes = scoring.select_keyframes(frame_scores, num_keyframes)
    selected = features[torch.arange(len(features))[:, None], keyframes]
    logits = model.answer(selected, qa_texts, num_options, readout)
    return ChainOutput(frame_scores, keyframes, logits, logits.softmax(-1), logits.argmax(-1))


def padding_fraction(model: SeViLA, loc_texts: Sequence[str], frames: int) -> float:
    """Share of the T5 tokens that were padding in the old single padded batch of `loc_texts`."""
    lengths = model.tokenizer(list(loc_texts), truncation=True, max_length=model.config.max_text_length)["input_ids"]
    lengths = [len(ids) for ids in lengths]
    fixed = len(model._frame_prefix_ids) + model.config.num_query_tokens
    return 1 - sum(fixed + n for n in lengths) / (len(lengths) * (fixed + max(lengths)))


# ---- a candidate that stays out of the library ----------------------------------------------------------
def folded_first_step_logits(llm, encoder_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits of the first decoder step (N, V) without projecting the encoder states to keys and values.

    At step 0 each cross-attention layer has one query per sequence, so per head softmax(q·(H·Wk)ᵀ)·(H·Wv)
    = softmax((q·Wk)·Hᵀ)·H·Wv: two products with H instead of the L×D×D projections. Self-attention over
    the single start token is o(v(x)). Eval mode, float32/bfloat16 only. Equal to the decoder step up to
    float rounding (the benchmark reports the largest difference).
    """
    decoder = llm.get_decoder()
    n = encoder_hidden.shape[0]
    x = decoder.embed_tokens(torch.full((n, 1), llm.config.decoder_start_token_id, dtype=torch.long))
    bias = (1.0 - attention_mask[:, None, :].to(encoder_hidden.dtype)) * torch.finfo(encoder_hidden.dtype).min
    for block in decoder.block:
        self_attn, cross, feed_forward = block.layer
        attn = self_attn.SelfAttention
        x = x + attn.o(attn.v(self_attn.layer_norm(x)))
        attn = cross.EncDecAttention
        heads, head_dim = attn.n_heads, attn.key_value_proj_dim
        query = attn.q(cross.layer_norm(x)).view(n, heads, head_dim)
        w_key = attn.k.weight.view(heads, head_dim, -1)
        w_value = attn.v.weight.view(heads, head_dim, -1)
        scores = torch.einsum("nhd,nld->nhl", torch.einsum("nhk,hkd->nhd", query, w_key), encoder_hidden)
        weights = (scores + bias).softmax(-1)  # T5: no scaling, no position bias in cross-attention
        context = torch.einsum("nhd,hkd->nhk", torch.einsum("nhl,nld->nhd", weights, encoder_hidden), w_value)
        x = x + attn.o(context.reshape(n, 1, heads * head_dim))
        x = x + feed_forward.DenseReluDense(feed_forward.layer_norm(x))
    x = decoder.final_layer_norm(x)
    if llm.config.scale_decoder_outputs:
        x = x * (llm.config.d_model ** -0.5)
    return llm.lm_head(x)[:, 0]


def localize_folded(model: SeViLA, features: Tensor, loc_texts: Sequence[str]) -> Tensor:
    """`SeViLA.localize` with the folded first decoder step."""
    b, t = features.shape[:2]
    visual = model.localizer(features.flatten(0, 1)).unflatten(0, (b, t))

    def score(embeds, mask):
        hidden = scoring.encode(model.llm, embeds, mask)
        return folded_first_step_logits(model.llm, hidden, mask)[:, model.answer_tokens.yes_id].float()

    return model.each_question_single_frames(visual, loc_texts, score)
