"""SeViLA: one image-language model (BLIP-2) made into a Localizer and an Answerer (paper §3, official `sevila.py`).

    frames (B, T, 3, H, W)
      │  frozen ViT, run ONCE per frame and shared by both modules            vision_encoder
      ▼
    raw ViT tokens (B, T, P, Dv)
      ├─► Localizer bridge: LayerNorm → Q-Former(queries) → projection       localizer
      │     each frame its own T5 sequence ["Frame: ", 32 tokens, loc text] → "yes" logit → top-k
      └─► Answerer bridge:  LayerNorm → Q-Former(queries) → projection       answerer
            one T5 sequence ["Frame 1: ", tokens, …, "Frame k: ", tokens, qa text] → "Option X"
    frozen Flan-T5, shared                                                  llm

Only the two bridges train. The parts are transformers' `Blip2VisionModel`, `Blip2QFormerModel` and
`T5ForConditionalGeneration`; this file only wires them the way the official `SeViLA` class does.
The LLM is an encoder-decoder T5; a decoder-only LLM (BLIP-2 OPT) would need its own input layout and read-outs
in `scoring.py`, and nothing else here assumes T5 beyond `self.llm`.
Introduced in `notebooks/00_setup.ipynb` and `notebooks/01_forward_chain.ipynb`.
"""
from __future__ import annotations

import copy
from functools import cached_property
from typing import Sequence

import torch
from torch import Tensor, nn
from transformers import Blip2QFormerModel, Blip2VisionModel, T5ForConditionalGeneration

from . import chain, prompts, scoring
from .chain import ChainOutput
from .config import DTYPES, SevilaConfig
from .scorers import LocalizerScorer
from .selection import Rule


class Bridge(nn.Module):
    """The trainable part of one SeViLA module: post-ViT LayerNorm → Q-Former → projection into T5.

    LAVIS names: `ln_vision` / `Qformer` / `query_tokens` / `t5_proj` (answerer) and their `_loc` twins.
    The Q-Former never sees the question: its only inputs are the query tokens and the image features.
    """

    def __init__(self, config: SevilaConfig):
        super().__init__()
        self.vision_norm = nn.LayerNorm(config.vision_width, eps=config.vision_norm_eps)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_width))
        nn.init.normal_(self.query_tokens, std=0.02)
        self.qformer = Blip2QFormerModel(config.blip2.qformer_config)
        self.projection = nn.Linear(config.qformer_width, config.llm_width)

    def forward(self, vision_features: Tensor) -> Tensor:
        """Raw ViT tokens of N images -> N × Q soft visual tokens for T5. (N, P, Dv) -> (N, Q, D)"""
        image = self.vision_norm(vision_features.float())
        queries = self.query_tokens.expand(image.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image,
                           encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long, device=image.device))
        return self.projection(out.last_hidden_state)


class Localizer(Bridge):
    """Scores each frame: "does this frame answer the question?" (its bridge; scoring in `scoring.py`)."""


class Answerer(Bridge):
    """Answers from k keyframes written as "Frame 1: … Frame k: …" (its bridge; read-outs in `scoring.py`)."""


class SeViLA(nn.Module):
    """Frozen ViT + Localizer + Answerer + frozen T5, built from a `SevilaConfig` and a T5 tokenizer."""

    T5_SEQUENCES_PER_CALL = 32  # single-frame T5 calls hold at least this many sequences (each_question_single_frames)

    def __init__(self, config: SevilaConfig, tokenizer):
        super().__init__()
        pieces = tokenizer.convert_ids_to_tokens(tokenizer("Frame 1: ", add_special_tokens=False)["input_ids"])
        if not pieces or pieces[-1] != "▁":  # the official prompts end "Frame 1: " with a lone "▁" token
            raise ValueError(f"this tokenizer drops the trailing '▁' of 'Frame 1: ' ({pieces}), as transformers 5's "
                             "AutoTokenizer/T5Tokenizer do when they rebuild T5's pre-tokenizer, so every prompt "
                             "would differ from the official one; load it with checkpoints.load_tokenizer(folder)")
        self.config = config
        self.tokenizer = tokenizer
        self.vision_encoder = Blip2VisionModel(config.blip2.vision_config)
        # Each bridge has its own post-ViT LayerNorm (LAVIS ln_vision / ln_vision_loc), so the shared encoder
        # stops before HF's post_layernorm; its weights load into the bridges (see checkpoints.py).
        self.vision_encoder.post_layernorm = nn.Identity()
        self.localizer = Localizer(config)
        self.answerer = Answerer(config)
        self.llm = T5ForConditionalGeneration(config.blip2.text_config)
        if not config.blip2.text_config.scale_decoder_outputs:
            # Flan-T5 (T5 v1.1) has an output head of its own; transformers 5 ties it to the input embedding in a
            # freshly built model, so untie it before any checkpoint fills the two with different weights.
            self.llm.lm_head.weight = nn.Parameter(self.llm.shared.weight.detach().clone())
        self.answer_tokens = scoring.AnswerTokens.from_tokenizer(tokenizer)
        self.truncation = prompts.TruncationCounter()
        # Official training leaves dropout on in the frozen T5 (official `sevila.py`); we switch it off unless asked.
        self.frozen_dropout = False
        for frozen in (self.vision_encoder, self.llm):
            frozen.requires_grad_(False)
        self.vision_encoder.to(DTYPES[config.vision_dtype])
        self.llm.to(DTYPES[config.llm_dtype])
        self.train(False)

    def train(self, mode: bool = True) -> "SeViLA":
        super().train(mode)
        self.vision_encoder.eval()  # frozen ViT never trains (official `disabled_train`)
        self.llm.train(mode and self.frozen_dropout)
        return self

    def sharing_frozen_parts(self) -> "SeViLA":
        """A model with its own copies of the two bridges (the only parts that train) and the SAME frozen ViT and
        T5 modules as this one: a training run or a composed model (`Workspace.model_with`) costs two Q-Formers,
        never a copy of the frozen billions of parameters. Train it, not this one, and keep the frozen parts frozen."""
        twin = copy.copy(self)  # shallow: shares the tokenizer, config and frozen modules
        twin._parameters, twin._buffers, twin._modules = dict(self._parameters), dict(self._buffers), dict(self._modules)
        twin.localizer, twin.answerer = copy.deepcopy(self.localizer), copy.deepcopy(self.answerer)
        twin.truncation = prompts.TruncationCounter()
        return twin

    @property
    def device(self) -> torch.device:
        return self.localizer.query_tokens.device

    # ---- step 1: the frozen ViT, once per frame ---------------------------------------------------------
    @torch.no_grad()
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Raw ViT tokens (before any bridge's LayerNorm). (B, T, 3, H, W) -> (B, T, P, Dv) float32"""
        b, t = frames.shape[:2]
        pixels = frames.flatten(0, 1).to(self.device, DTYPES[self.config.vision_dtype])
        hidden = self.vision_encoder(pixel_values=pixels).last_hidden_state
        return hidden.float().unflatten(0, (b, t))

    # ---- building T5 inputs -----------------------------------------------------------------------------
    def _embed(self, ids: Tensor) -> Tensor:
        return self.llm.get_input_embeddings()(ids.to(self.device))

    def _prompt(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        enc = prompts.encode_prompts(self.tokenizer, texts, self.config.max_text_length, self.truncation)
        return self._embed(enc["input_ids"]), enc["attention_mask"].to(self.device)

    @cached_property
    def _frame_prefix_ids(self) -> Tensor:
        return torch.tensor(self.tokenizer(prompts.FRAME_PREFIX, add_special_tokens=False)["input_ids"])

    def _keyframe_prefix_ids(self, k: int) -> tuple[Tensor, Tensor]:
        """"Frame 1: ".."Frame k: " padded to the longest, as the official code does. (k, p), (k, p)"""
        cache = self.__dict__.setdefault("_keyframe_prefix_cache", {})
        if k not in cache:
            enc = self.tokenizer([prompts.keyframe_prefix(i + 1) for i in range(k)], add_special_tokens=False,
                                 padding="longest", return_tensors="pt")
            cache[k] = (enc["input_ids"], enc["attention_mask"])
        return cache[k]

    def _llm_dtype(self, x: Tensor) -> Tensor:
        return x.to(DTYPES[self.config.llm_dtype])

    def single_frame_inputs(self, visual: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """One T5 sequence per frame: ["Frame: ", Q visual tokens, text</s>]. visual (B, T, Q, D) ->
        embeds (B*T, L, D), mask (B*T, L); the text of question b is repeated for its T frames."""
        b, t, q, _ = visual.shape
        prefix = self._embed(self._frame_prefix_ids)[None].expand(b * t, -1, -1)
        text, text_mask = self._prompt(texts)
        text, text_mask = text.repeat_interleave(t, 0), text_mask.repeat_interleave(t, 0)
        embeds = torch.cat([self._llm_dtype(prefix), self._llm_dtype(visual.flatten(0, 1)), text], dim=1)
        ones = torch.ones(b * t, prefix.shape[1] + q, dtype=text_mask.dtype, device=self.device)
        return embeds, torch.cat([ones, text_mask], dim=1)

    def each_question_single_frames(self, visual: Tensor, texts: Sequence[str], read) -> Tensor:
        """`read(embeds, mask)` on the single-frame sequences of `single_frame_inputs`, one T5 call per question
        (or per few questions when T is small), stacked: visual (B, T, Q, D) -> (B, T, ...).

        A question's T sequences share its text, so a call per question pads nothing (one call over all B × T
        sequences would pad every text to the longest of the batch: 15–20% of the tokens in mini-world batches
        of 8) and stays cache-sized; with T ≥ 32 the localizer scores are then bit-identical to the official
        per-question `generate()`. Below `T5_SEQUENCES_PER_CALL` sequences per question, consecutive questions
        share a call (padded among themselves), as per-call overhead would outweigh the padding saved.
        Measured in benchmarks/ (reports/benchmarks.md). Texts are tokenised once per batch.
        """
        b, t, q, _ = visual.shape
        text, text_mask = self._prompt(texts)  # (B, L, D) padded to the longest text of the batch
        prefix = self._llm_dtype(self._embed(self._frame_prefix_ids))
        per_call = -(-self.T5_SEQUENCES_PER_CALL // t)  # questions per T5 call
        out = []
        for start in range(0, b, per_call):
            group = slice(start, start + per_call)
            n = len(text[group])
            keep = text_mask[group].any(0)  # drop the columns that are padding for every question of the group
            embeds = torch.cat([prefix[None].expand(n * t, -1, -1), self._llm_dtype(visual[group].flatten(0, 1)),
                                text[group][:, keep].repeat_interleave(t, 0)], dim=1)
            mask = torch.cat([torch.ones(n * t, prefix.shape[0] + q, dtype=text_mask.dtype, device=self.device),
                              text_mask[group][:, keep].repeat_interleave(t, 0)], dim=1)
            out.append(read(embeds, mask).unflatten(0, (n, t)))
        return torch.cat(out)

    def keyframe_inputs(self, visual: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """One T5 sequence per question: ["Frame 1: ", tokens, …, "Frame k: ", tokens, text</s>].
        visual (B, k, Q, D) -> embeds (B, L, D), mask (B, L)."""
        b, k, q, _ = visual.shape
        prefix_ids, prefix_mask = self._keyframe_prefix_ids(k)
        prefix = self._embed(prefix_ids)[None].expand(b, -1, -1, -1)  # (B, k, p, D)
        frames = torch.cat([self._llm_dtype(prefix), self._llm_dtype(visual)], dim=2).flatten(1, 2)
        frame_mask = torch.cat([prefix_mask.to(self.device), torch.ones(k, q, dtype=prefix_mask.dtype,
                                                                        device=self.device)], dim=1)
        text, text_mask = self._prompt(texts)
        embeds = torch.cat([frames, text], dim=1)
        return embeds, torch.cat([frame_mask.flatten()[None].expand(b, -1), text_mask], dim=1)

    # ---- the Localizer ----------------------------------------------------------------------------------
    def localize(self, features: Tensor, loc_texts: Sequence[str], kind: str = "logit") -> Tensor:
        """Score every frame for its question. features (B, T, P, Dv) -> scores (B, T)"""
        return self.localize_visual(self.localizer_tokens(features), loc_texts, kind)

    def localizer_tokens(self, features: Tensor) -> Tensor:
        """The Localizer bridge's visual tokens. features (B, T, P, Dv) -> (B, T, Q, D). They do not depend on
        the prompt, so a sweep over prompts computes them once (`evaluation.Evaluator.frame_scores`)."""
        b, t = features.shape[:2]
        return self.localizer(features.flatten(0, 1)).unflatten(0, (b, t))

    def localize_visual(self, visual: Tensor, loc_texts: Sequence[str], kind: str = "logit") -> Tensor:
        """`localize` from the bridge's tokens. visual (B, T, Q, D) -> scores (B, T)"""
        score = lambda embeds, mask: scoring.yes_scores(self.llm, embeds, mask, self.answer_tokens, kind)  # noqa: E731
        return self.each_question_single_frames(visual, loc_texts, score)

    def localizer_loss(self, features: Tensor, loc_texts: Sequence[str], labels: Tensor) -> Tensor:
        """T5 cross-entropy of "yes"/"no" per frame (pre-training and the reverse chain). labels (B, T) bool"""
        embeds, mask = self.single_frame_inputs(self.localizer_tokens(features), loc_texts)
        targets = [prompts.YES if flag else prompts.NO for flag in labels.flatten().tolist()]
        return self._seq2seq_loss(embeds, mask, targets)

    # ---- the Answerer -----------------------------------------------------------------------------------
    def answer(self, features: Tensor, qa_texts: Sequence[str], num_options: int | Sequence[int],
               readout: str = "official") -> Tensor:
        """Option logits from k keyframes read together. features (B, k, P, Dv) -> (B, max options)"""
        b, k = features.shape[:2]
        visual = self.answerer(features.flatten(0, 1)).unflatten(0, (b, k))
        embeds, mask = self.keyframe_inputs(visual, qa_texts)
        return self._option_logits(embeds, mask, num_options, readout)

    def answer_each_frame(self, features: Tensor, qa_texts: Sequence[str], num_options: int | Sequence[int],
                          readout: str = "teacher_forced") -> Tensor:
        """Option logits from each frame alone ("Frame: " format; voting, oracle, pseudo-labels).
        features (B, T, P, Dv) -> (B, T, max options)"""
        b, t = features.shape[:2]
        visual = self.answerer(features.flatten(0, 1)).unflatten(0, (b, t))
        counts = self._option_counts(num_options, b)
        logits = self.each_question_single_frames(visual, qa_texts, lambda embeds, mask: scoring.option_logits(
            self.llm, embeds, mask, self.answer_tokens, max(counts), readout))  # (B, T, max options)
        return self._mask_missing_options(logits, counts)

    def answerer_loss(self, features: Tensor, qa_texts: Sequence[str], answers: Sequence[int]) -> Tensor:
        """T5 cross-entropy of "Option X" given k keyframes. features (B, k, P, Dv)"""
        b, k = features.shape[:2]
        visual = self.answerer(features.flatten(0, 1)).unflatten(0, (b, k))
        embeds, mask = self.keyframe_inputs(visual, qa_texts)
        return self._seq2seq_loss(embeds, mask, [prompts.answer_target(a) for a in answers])

    # ---- the forward chain (written once, in chain.py) --------------------------------------------------
    @torch.inference_mode()
    def forward_chain(self, features: Tensor, qa_texts: Sequence[str], loc_texts: Sequence[str],
                      num_options: int | Sequence[int], num_keyframes: int = 4,
                      readout: str = "official", score_kind: str = "logit", rule: str | Rule = "top_k") -> ChainOutput:
        """Localizer → `rule` (official: top-k in temporal order) → Answerer, for B questions over T frames.

        features: raw ViT tokens (B, T, P, Dv) from `encode_frames` (or a feature cache). Other scorers and rules:
        `chain.forward_chain` with a `scorers.get_scorer(...)`.
        """
        b, t = features.shape[:2]
        questions = chain.Questions([str(i) for i in range(b)], list(qa_texts), self._option_counts(num_options, b),
                                    list(qa_texts), loc_texts_given={"official": list(loc_texts)})
        batch = chain.FrameBatch(self, features, questions, [list(range(t))] * b)
        return chain.forward_chain(batch, LocalizerScorer(kind=score_kind), rule, num_keyframes, readout)

    # ---- shared helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _option_counts(num_options: int | Sequence[int], n: int) -> list[int]:
        return [num_options] * n if isinstance(num_options, int) else list(num_options)

    def _option_logits(self, embeds: Tensor, mask: Tensor, num_options: int | Sequence[int],
                       readout: str) -> Tensor:
        counts = self._option_counts(num_options, len(embeds))
        logits = scoring.option_logits(self.llm, embeds, mask, self.answer_tokens, max(counts), readout)
        return self._mask_missing_options(logits, counts)

    @staticmethod
    def _mask_missing_options(logits: Tensor, counts: Sequence[int]) -> Tensor:
        """Questions with fewer options than the widest in the batch can never pick a missing letter.
        logits (B, ..., max options); counts: B option counts."""
        letters = torch.arange(logits.shape[-1], device=logits.device)
        missing = letters >= torch.tensor(counts, device=logits.device)[:, None]  # (B, max options)
        return logits.masked_fill(missing.view(len(counts), *[1] * (logits.dim() - 2), -1), float("-inf"))

    def _seq2seq_loss(self, embeds: Tensor, mask: Tensor, targets: Sequence[str]) -> Tensor:
        labels = self.tokenizer(list(targets), padding="longest", return_tensors="pt")["input_ids"].to(self.device)
        labels = labels.masked_fill(labels == self.tokenizer.pad_token_id, -100)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    def trainable_parameters(self, which: str = "both") -> list[nn.Parameter]:
        """Parameters of the "localizer", the "answerer" or "both" bridges (the only parts that train)."""
        bridges = {"localizer": [self.localizer], "answerer": [self.answerer],
                   "both": [self.localizer, self.answerer]}[which]
        return [p for bridge in bridges for p in bridge.parameters()]
