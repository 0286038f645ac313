"""How SeViLA reads decisions off the frozen language model (official `sevila.py`).

* Localizer: the logit of "yes" at the FIRST decoder step. The official code calls `generate()` for up to
  30 tokens and keeps `scores[0]`; one teacher-forced decoder step gives the same numbers for a fraction of
  the cost (tested against `generate()`).
* Answerer, `official` read-out: greedy first token, then the option-letter logits at the second step
  conditioned on THAT token, whatever it is (this produced the paper's zero-shot numbers).
* Answerer, `teacher_forced` read-out: feed "Option" and read the letter logits (the pseudo-labelling rule).
* Keyframe selection (`selection.py`): top-k, kept in temporal order, ties to the earlier frame.

Token ids always come from the tokenizer; nothing is hard-coded (the official ids 4273/150 and
71/272/205/309/262 are what the Flan-T5 tokenizer gives, and a test checks we derive the same rule).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutput

from . import prompts

READOUTS = ("official", "teacher_forced")


@dataclass(frozen=True)
class AnswerTokens:
    """The vocabulary ids the read-outs use, derived from a tokenizer."""

    yes_id: int
    no_id: int
    option_word_id: int  # "▁Option", the first target token
    letter_ids: tuple[int, ...]  # "▁A".."▁E", the second token of "Option A".."Option E"

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "AnswerTokens":
        def ids(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        yes, no = ids(prompts.YES), ids(prompts.NO)
        if len(yes) != 1 or len(no) != 1:
            raise ValueError(f"'yes'/'no' must be single tokens for the localizer score, got {yes} / {no}")
        targets = [ids(prompts.answer_target(i)) for i in range(len(prompts.OPTION_LETTERS))]
        if any(len(t) != 2 or t[0] != targets[0][0] for t in targets):
            raise ValueError(f"'Option A'..'Option E' must tokenise as ['Option', letter], got {targets}")
        return cls(yes[0], no[0], targets[0][0], tuple(t[1] for t in targets))


def _decoder_logits(llm, encoder_hidden: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
    """Logits of every decoder position given a computed encoder output. (N, L_dec, V)"""
    out = llm(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden), attention_mask=attention_mask,
              decoder_input_ids=decoder_input_ids, use_cache=False)
    return out.logits


def _start_ids(llm, n: int, device) -> Tensor:
    return torch.full((n, 1), llm.config.decoder_start_token_id, dtype=torch.long, device=device)


def encode(llm, inputs_embeds: Tensor, attention_mask: Tensor) -> Tensor:
    """Run the T5 encoder once. (N, L, D) -> (N, L, D)"""
    return llm.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state


def yes_scores(llm, inputs_embeds: Tensor, attention_mask: Tensor, tokens: AnswerTokens,
               kind: str = "logit") -> Tensor:
    """Localizer frame scores, one per sequence. (N, L, D) -> (N,)

    kind="logit" (official): the raw "yes" logit at the first decoder step.
    kind="yes_no_prob": softmax over the ("no", "yes") logits, P(yes) — the paper's wording.
    kind="no_yes": both logits, (N, 2), from which either score follows (`score_from_no_yes`).
    """
    hidden = encode(llm, inputs_embeds, attention_mask)
    logits = _decoder_logits(llm, hidden, attention_mask, _start_ids(llm, len(hidden), hidden.device))[:, 0]
    no_yes = logits[:, [tokens.no_id, tokens.yes_id]].float()
    return no_yes if kind == "no_yes" else score_from_no_yes(no_yes, kind)


def score_from_no_yes(no_yes: Tensor, kind: str) -> Tensor:
    """A Localizer score from the ("no", "yes") logits (..., 2): the "yes" logit or P(yes)."""
    if kind == "logit":
        return no_yes[..., 1]
    if kind == "yes_no_prob":
        return no_yes.softmax(-1)[..., 1]
    raise ValueError(f"unknown score kind {kind!r}; use 'logit' or 'yes_no_prob'")


def option_logits(llm, inputs_embeds: Tensor, attention_mask: Tensor, tokens: AnswerTokens,
                  num_options: int, readout: str = "official") -> Tensor:
    """Answerer logits over the option letters. (N, L, D) -> (N, num_options)"""
    if readout not in READOUTS:
        raise ValueError(f"unknown read-out {readout!r}; choose from {READOUTS}")
    hidden = encode(llm, inputs_embeds, attention_mask)
    start = _start_ids(llm, len(hidden), hidden.device)
    if readout == "official":
        # Step 0 greedily picks a token (normally "Option"); step 1 is read whatever that token was.
        first = _decoder_logits(llm, hidden, attention_mask, start)[:, 0].argmax(-1, keepdim=True)
    else:
        first = torch.full_like(start, tokens.option_word_id)
    logits = _decoder_logits(llm, hidden, attention_mask, torch.cat([start, first], dim=1))[:, 1]
    return logits[:, list(tokens.letter_ids[:num_options])].float()


def select_keyframes(frame_scores: Tensor, num_keyframes: int) -> Tensor:
    """The official rule: top-k frames per row in temporal order, ties to the earlier frame (`selection.top_k`).
    (B, T) -> (B, k)"""
    from .selection import Rule

    return Rule("top_k")(frame_scores, num_keyframes)


def generate_yes_scores(llm, inputs_embeds: Tensor, attention_mask: Tensor, tokens: AnswerTokens,
                        max_new_tokens: int = 30) -> tuple[Tensor, int]:
    """The official Localizer read-out, for parity checks and speed comparisons (`SeViLA.generate` in the
    official `lavis/models/sevila_models/sevila.py`): greedy `generate()` for up to 30 tokens, keeping the "yes"
    logit of the first step. (N, L, D) -> (yes logits (N,), decoder steps run). `yes_scores` gives the same
    numbers from one decoder step."""
    out = llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                       num_beams=1, do_sample=False, min_length=1, output_scores=True, return_dict_in_generate=True)
    return out.scores[0][:, tokens.yes_id].float(), len(out.scores)
