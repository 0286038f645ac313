"""Model configuration: one `SevilaConfig` wrapping transformers' `Blip2Config` (official `sevila.py`; official model yamls).

The same classes serve the real BLIP-2 Flan-T5-XL shape and the tiny shapes used by tests and the mini world.
Named presets: `"blip2-flan-t5-xl"` (the paper's shape), `"base"` (ViT-B/BERT-base/T5-base-like, random
weights, for benchmarks) and `"tiny"` (tests). The shipped mini BLIP-2 carries its own config file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from transformers import Blip2Config, T5Config

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class SevilaConfig:
    """Everything needed to build a SeViLA model, and nothing about a run.

    blip2: the BLIP-2 config (vision, Q-Former and T5 sub-configs, number of query tokens).
    vision_norm_eps: eps of each bridge's post-ViT LayerNorm (LAVIS `ln_vision`: torch default 1e-5).
    max_text_length: prompt truncation in T5 tokens incl. `</s>` (official: hard-coded 77).
    vision_dtype / llm_dtype: parameter precision of the frozen ViT and T5. Official on CUDA: float16 /
      bfloat16 (`SevilaConfig.official_cuda_precision()`); float32 on CPU.
    """

    blip2: Blip2Config
    vision_norm_eps: float = 1e-5
    max_text_length: int = 77
    vision_dtype: str = "float32"
    llm_dtype: str = "float32"
    name: str = ""

    def __post_init__(self):
        # LAVIS builds Flan-T5 with exact GELU in the feed-forward (HF's config says gelu_new for gated-gelu).
        self.blip2.text_config.dense_act_fn = "gelu"
        for dtype in (self.vision_dtype, self.llm_dtype):
            if dtype not in DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")

    @property
    def vision_width(self) -> int:
        return self.blip2.vision_config.hidden_size

    @property
    def qformer_width(self) -> int:
        return self.blip2.qformer_config.hidden_size

    @property
    def llm_width(self) -> int:
        return self.blip2.text_config.d_model

    @property
    def image_size(self) -> int:
        return self.blip2.vision_config.image_size

    @property
    def num_query_tokens(self) -> int:
        return self.blip2.num_query_tokens

    def official_cuda_precision(self) -> "SevilaConfig":
        """The official precisions: ViT fp16, T5 bf16 (Q-Formers stay fp32)."""
        return SevilaConfig(self.blip2, self.vision_norm_eps, self.max_text_length, "float16", "bfloat16", self.name)

    # --- serialisation: one JSON file, unknown keys rejected -------------------------------------------
    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "blip2"}
        out["blip2"] = blip2_config_dict(self.blip2)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SevilaConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown SevilaConfig keys: {sorted(unknown)}")
        data = dict(data)
        return cls(blip2=Blip2Config.from_dict(data.pop("blip2")), **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, path: str | Path) -> "SevilaConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def blip2_config_dict(blip2: Blip2Config) -> dict:
    """`Blip2Config.to_dict()` that survives a reload: transformers 5 writes T5's `tie_word_embeddings` as
    true and derives `scale_decoder_outputs` from it when reading, which would rescale a Flan-T5 (v1.1) head."""
    data = blip2.to_dict()
    data["text_config"]["tie_word_embeddings"] = bool(blip2.text_config.scale_decoder_outputs)
    return data


def make_blip2_config(*, image_size: int, patch_size: int, vision_width: int, vision_layers: int,
                      vision_heads: int, vision_mlp: int, qformer_width: int, qformer_layers: int,
                      qformer_heads: int, qformer_mlp: int, cross_attention_frequency: int,
                      num_query_tokens: int, t5: dict) -> Blip2Config:
    """A BLIP-2 config from the handful of numbers that define its shape."""
    vision = dict(image_size=image_size, patch_size=patch_size, hidden_size=vision_width,
                  num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                  intermediate_size=vision_mlp, qkv_bias=True, layer_norm_eps=1e-6,
                  # transformers' default for BLIP-2's ViT is 1e-10 (its weights are always loaded): a ViT trained
                  # from scratch, or a random one in a benchmark, would start with every patch token equal.
                  initializer_range=0.02)
    qformer = dict(hidden_size=qformer_width, num_hidden_layers=qformer_layers, num_attention_heads=qformer_heads,
                   intermediate_size=qformer_mlp, cross_attention_frequency=cross_attention_frequency,
                   encoder_hidden_size=vision_width)
    text = T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                    pad_token_id=0, eos_token_id=1, **t5).to_dict()
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                       num_query_tokens=num_query_tokens)


PRESETS = {
    # The paper's shape (EVA ViT-g/14 as BLIP-2 uses it, BERT-base Q-Former, Flan-T5-XL). Weights: see README.
    "blip2-flan-t5-xl": dict(image_size=224, patch_size=14, vision_width=1408, vision_layers=39, vision_heads=16,
                             vision_mlp=6144, qformer_width=768, qformer_layers=12, qformer_heads=12,
                             qformer_mlp=3072, cross_attention_frequency=2, num_query_tokens=32,
                             t5=dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24,
                                     num_heads=32)),
    # ViT-B/16-, BERT-base- and T5-base-like sizes with random weights: the benchmarks' "base" shape.
    "base": dict(image_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                 vision_mlp=3072, qformer_width=768, qformer_layers=12, qformer_heads=12, qformer_mlp=3072,
                 cross_attention_frequency=2, num_query_tokens=32,
                 t5=dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12)),
    # Unit tests: every code path, milliseconds per call.
    "tiny": dict(image_size=16, patch_size=8, vision_width=24, vision_layers=1, vision_heads=2, vision_mlp=32,
                 qformer_width=32, qformer_layers=2, qformer_heads=2, qformer_mlp=40,
                 cross_attention_frequency=2, num_query_tokens=3,
                 t5=dict(vocab_size=0, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=2)),
}


def preset(name: str, vocab_size: int | None = None, **overrides) -> SevilaConfig:
    """A named model shape; `vocab_size` must match the tokenizer you pair it with."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}")
    shape = {**PRESETS[name], "t5": dict(PRESETS[name]["t5"])}
    if vocab_size is not None:
        shape["t5"]["vocab_size"] = vocab_size
    if shape["t5"]["vocab_size"] <= 0:
        raise ValueError(f"preset {name!r} needs vocab_size= (the tokenizer's length)")
    return SevilaConfig(make_blip2_config(**shape), name=name, **overrides)


