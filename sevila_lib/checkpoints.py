"""Loading and saving weights: Hugging Face BLIP-2 directories, LAVIS/SeViLA `.pth` files, the kit's own format
(official checkpoints (HF `Shoubin/SeViLA`)).

* `from_hf_blip2(path_or_hub_id)`: a BLIP-2 checkpoint as transformers saves it (e.g. the user's download of
  `Salesforce/blip2-flan-t5-xl`, or the kit's mini BLIP-2). Both bridges start from BLIP-2's Q-Former, as in
  the official code.
* `load_lavis(model, path)`: official LAVIS-layout state dicts (`sevila_pretrained.pth`,
  `blip2_pretrained_flant5xl.pth`, or a full dict with `visual_encoder.*` and `t5_model.*`), renamed by the
  explicit table below. Read with `torch.load(weights_only=True)`: a file that needs pickled code is refused.
* `save_bridges` / `load_bridges`: the kit's format — the two trainable bridges only, as safetensors, plus the
  model config as JSON.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from .config import SevilaConfig, blip2_config_dict
from .files import atomic_write_text, save_safetensors
from .model import SeViLA

BRIDGES = {"answerer": "", "localizer": "_loc"}  # kit bridge name -> LAVIS key suffix


@dataclass
class LoadReport:
    """What a load did: keys of the model nobody filled, keys of the file nobody used."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # known-unused keys (e.g. the Q-Former's text side)

    def __str__(self) -> str:
        return (f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, ignored {len(self.ignored)}"
                + (f"; missing e.g. {self.missing[:3]}" if self.missing else "")
                + (f"; unexpected e.g. {self.unexpected[:3]}" if self.unexpected else ""))


def _load_into(model: SeViLA, state: dict[str, Tensor], source: str | Path,
               ignored: list[str] | None = None) -> LoadReport:
    # torch copies every tensor that fits before it raises on a size mismatch: check first, so a file of another
    # model size names itself and leaves the model as it was.
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{source}: {len(wrong)} weight(s) have another shape than the model's (another model "
                         f"size or config?), e.g. {wrong[:3]} (file vs model); nothing was loaded")
    result = model.load_state_dict(state, strict=False)
    return LoadReport(sorted(result.missing_keys), sorted(result.unexpected_keys), sorted(ignored or []))


# ---- Hugging Face BLIP-2 layout ---------------------------------------------------------------------------
def hf_blip2_to_kit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a `Blip2ForConditionalGeneration` state dict to the kit's keys; the one BLIP-2 bridge fills both."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("vision_model.post_layernorm."):
            for bridge in BRIDGES:
                out[key.replace("vision_model.post_layernorm.", f"{bridge}.vision_norm.")] = value
        elif key.startswith("vision_model."):
            out["vision_encoder." + key[len("vision_model."):]] = value
        elif key.startswith("language_model."):
            out["llm." + key[len("language_model."):]] = value
        elif key == "query_tokens" or key.startswith(("qformer.", "language_projection.")):
            renamed = key.replace("language_projection.", "projection.")
            for bridge in BRIDGES:
                out[f"{bridge}.{renamed}"] = value
        else:
            out[key] = value  # reported as unexpected
    return out


def kit_to_hf_blip2(model: SeViLA, bridge: str = "answerer") -> dict[str, Tensor]:
    """The model as a BLIP-2 state dict, with `bridge` as BLIP-2's Q-Former (used to ship the mini BLIP-2)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision_encoder."):
            out["vision_model." + key[len("vision_encoder."):]] = value
        elif key.startswith("llm."):
            if not key.endswith(".embed_tokens.weight"):  # T5's encoder/decoder share `shared.weight`
                out["language_model." + key[len("llm."):]] = value
        elif key.startswith(bridge + "."):
            rest = key[len(bridge) + 1:]
            rest = rest.replace("vision_norm.", "vision_model.post_layernorm.", 1) if rest.startswith("vision_norm.") \
                else rest.replace("projection.", "language_projection.", 1)
            out[rest] = value
    return {k: v.contiguous() for k, v in out.items()}


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """`safetensors.torch.load_file`, but a truncated or corrupt file raises a ValueError naming its path and size
    (safetensors' own error names neither)."""
    try:
        return load_file(path, device=device)
    except FileNotFoundError:
        raise
    except Exception as err:  # SafetensorError: "incomplete metadata, file not fully covered", "header too small"
        raise ValueError(f"{path}: truncated or corrupt safetensors file ({_size(path)}; {err}); "
                         f"write or download it again") from err


def _size(path: str | Path) -> str:
    try:
        return f"{os.path.getsize(path)} bytes"
    except OSError:
        return "size unknown"


def _read_hf_weights(directory: Path) -> dict[str, Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if files:
        state = {}
        for file in files:
            state.update(read_safetensors(file))
        return state
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {directory}")
    state = {}
    for file in bins:
        state.update(_torch_load_weights_only(file))
    return state


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """A local directory as is; the kit's models by name ("mini"); otherwise a Hugging Face hub id, downloaded
    by `huggingface_hub` (needs internet the first time, then its cache)."""
    from . import paths

    if str(name_or_path) == "mini":
        return paths.MINI_MODEL_DIR
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:  # a hub id is "owner/name"
        raise FileNotFoundError(f"no BLIP-2 folder at {name} (and it is not a hub id such as "
                                f"Salesforce/blip2-flan-t5-xl)")
    from huggingface_hub import snapshot_download  # online users only

    return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def from_hf_blip2(name_or_path: str | Path, *, vision_dtype: str = "float32", llm_dtype: str = "float32",
                  max_text_length: int = 77, device: str | torch.device = "cpu") -> tuple[SeViLA, LoadReport]:
    """Build SeViLA from a BLIP-2 (T5) checkpoint directory or hub id; both bridges = BLIP-2's Q-Former."""
    from transformers import Blip2Config

    directory = resolve_pretrained(name_or_path)
    blip2 = Blip2Config.from_pretrained(directory)
    if blip2.text_config.model_type != "t5":
        raise NotImplementedError(f"{directory}: only T5 language models are supported (got "
                                  f"{blip2.text_config.model_type}); BLIP-2 OPT needs a decoder-only read-out")
    config = SevilaConfig(blip2, max_text_length=max_text_length, vision_dtype=vision_dtype, llm_dtype=llm_dtype,
                          name=str(name_or_path))
    tokenizer = load_tokenizer(directory)
    with torch.device("meta"):
        model = SeViLA(config, tokenizer)
    model.to_empty(device=device)
    # T5 shares one embedding between `shared`, the encoder and the decoder; files store it once.
    model.llm.encoder.embed_tokens = model.llm.decoder.embed_tokens = model.llm.shared
    report = _load_into(model, hf_blip2_to_kit(_read_hf_weights(directory)), directory)
    report.missing = [k for k in report.missing if not k.endswith(".embed_tokens.weight")]
    if report.missing:
        raise ValueError(f"{directory}: checkpoint does not fill the model: {report}")
    return model.eval(), report


def load_tokenizer(directory: str | Path):
    """The T5 tokenizer exactly as its `tokenizer.json` defines it.

    transformers 5's `T5Tokenizer` rebuilds the pre-tokenizer with a whitespace split, which drops the trailing
    "▁" token of "Frame 1: " that the official (transformers 4 `T5TokenizerFast`) prompts contain; reading
    `tokenizer.json` as is keeps the official token sequence.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    if (directory / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)  # sentencepiece-only folders


def save_hf_blip2(model: SeViLA, directory: str | Path, bridge: str = "answerer") -> None:
    """Write the model as a BLIP-2 checkpoint directory (config.json + model.safetensors + tokenizer)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "config.json", json.dumps(blip2_config_dict(model.config.blip2), indent=2))
    save_safetensors(kit_to_hf_blip2(model, bridge), directory / "model.safetensors")
    model.tokenizer.save_pretrained(directory)


# ---- LAVIS / official SeViLA layout -----------------------------------------------------------------------
# One table, read in both directions: (LAVIS name, kit name). {i} = a layer index; {s} = the bridge's LAVIS suffix
# ("" answerer, "_loc" localizer) and {b} its kit name. A name ending in "." is a prefix, any other a whole key.
LAVIS_RENAMES: list[tuple[str, str]] = [
    ("visual_encoder.cls_token", "vision_encoder.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_encoder.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.", "vision_encoder.embeddings.patch_embedding."),
    ("visual_encoder.blocks.{i}.norm1.", "vision_encoder.encoder.layers.{i}.layer_norm1."),
    ("visual_encoder.blocks.{i}.norm2.", "vision_encoder.encoder.layers.{i}.layer_norm2."),
    # EVA's q_bias / v_bias are one qkv bias here (zeros for k): `_merge_qkv_bias` / `_split_qkv_bias`.
    ("visual_encoder.blocks.{i}.attn.qkv.", "vision_encoder.encoder.layers.{i}.self_attn.qkv."),
    ("visual_encoder.blocks.{i}.attn.proj.", "vision_encoder.encoder.layers.{i}.self_attn.projection."),
    ("visual_encoder.blocks.{i}.mlp.", "vision_encoder.encoder.layers.{i}.mlp."),
    ("ln_vision{s}.", "{b}.vision_norm."),
    ("query_tokens{s}", "{b}.query_tokens"),
    ("t5_proj{s}.", "{b}.projection."),
    ("Qformer{s}.bert.embeddings.LayerNorm.", "{b}.qformer.layernorm."),
    ("Qformer{s}.bert.encoder.layer.{i}.attention.self.", "{b}.qformer.encoder.layer.{i}.attention.attention."),
    ("Qformer{s}.bert.encoder.layer.{i}.crossattention.self.",
     "{b}.qformer.encoder.layer.{i}.crossattention.attention."),
    *[(f"Qformer{{s}}.bert.encoder.layer.{{i}}.{part}.", f"{{b}}.qformer.encoder.layer.{{i}}.{part}.")
      for part in ("attention.output", "crossattention.output", "intermediate_query", "output_query")],
    ("t5_model.", "llm."),
]
# Keys LAVIS files may hold that SeViLA removes or never uses (the Q-Former's text side, buffers).
LAVIS_IGNORED = re.compile(r"Qformer(_loc)?\.(cls\.|bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"
                           r"|bert\.encoder\.layer\.\d+\.(intermediate|output)\.)")


def _renames(to_kit: bool) -> list[tuple[re.Pattern, str]]:
    """`LAVIS_RENAMES` as (compiled source pattern, replacement), LAVIS -> kit or kit -> LAVIS."""
    table = []
    for lavis, kit in LAVIS_RENAMES:
        source, target = (lavis, kit) if to_kit else (kit, lavis)
        for bridge, suffix in (BRIDGES.items() if "{s}" in lavis else [("", "")]):
            fill = lambda t: t.replace("{s}", suffix).replace("{b}", bridge)  # noqa: E731
            pattern = re.escape(fill(source)).replace(r"\{i\}", r"(\d+)")
            table.append((re.compile("^" + pattern + ("" if source.endswith(".") else "$")),
                          fill(target).replace("{i}", r"\1")))
    return table


def _rename(key: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, target in table:
        if pattern.match(key):
            return pattern.sub(target, key, count=1)
    return None


def lavis_to_kit(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Rename a LAVIS-layout state dict. Returns (renamed, unexpected keys, ignored keys)."""
    table = _renames(to_kit=True)
    out, unexpected, ignored = {}, [], []
    for key, value in _merge_qkv_bias(state).items():
        if LAVIS_IGNORED.match(key):
            ignored.append(key)
        elif (name := _rename(key, table)) is not None:
            out[name] = value
        else:
            unexpected.append(key)
    return out, unexpected, ignored


def _merge_qkv_bias(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """EVA-ViT keeps q_bias and v_bias; transformers' Blip2Attention has one qkv bias with zeros for k."""
    state = dict(state)
    for key in [k for k in state if k.endswith(".attn.q_bias")]:
        prefix = key[: -len("q_bias")]
        q, v = state.pop(key), state.pop(prefix + "v_bias")
        state[prefix + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return state


def _split_qkv_bias(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `_merge_qkv_bias` on LAVIS names."""
    state = dict(state)
    for key in [k for k in state if k.startswith("visual_encoder.") and k.endswith(".attn.qkv.bias")]:
        q, _, v = state.pop(key).chunk(3)
        prefix = key[: -len("qkv.bias")]
        state[prefix + "q_bias"], state[prefix + "v_bias"] = q, v
    return state


def kit_to_lavis(model: SeViLA, include_frozen: bool = True) -> dict[str, Tensor]:
    """The model in the official LAVIS key layout (the inverse of `lavis_to_kit`, from the same table), for
    round-trip tests and for handing weights back to the official code."""
    table = _renames(to_kit=False)
    out = {}
    for key, value in model.state_dict().items():
        name = _rename(key, table)
        if name is None or (not include_frozen and name.startswith(("visual_encoder.", "t5_model."))):
            continue
        out[name] = value
    return _split_qkv_bias(out)


def _torch_load_weights_only(path: str | Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):  # a pickle stream cut short
            raise ValueError(f"{path}: truncated or corrupt checkpoint file ({_size(path)}; torch.load: "
                             f"{str(err).splitlines()[0]}); download or save it again") from err
        raise ValueError(f"{path}: refused to load — the file needs pickled Python objects beyond tensors "
                         f"(torch.load weights_only=True failed: {str(err).splitlines()[0]}). Only load files you "
                         f"trust; re-save them as a plain state dict first.") from err
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as err:
        # A .pth cut short: torch says "failed finding central directory" or a bare "[Errno 22] Invalid argument".
        raise ValueError(f"{path}: truncated or corrupt checkpoint file ({_size(path)}; torch.load: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}); download or save it "
                         f"again") from err


def load_lavis(model: SeViLA, path: str | Path, *, require: tuple[str, ...] = ()) -> LoadReport:
    """Load an official LAVIS/SeViLA `.pth` (its "model" entry, or the dict itself) into `model` by key mapping.

    `require` lists kit key prefixes the file must fill (e.g. ("localizer.",) for `sevila_pretrained.pth`);
    a file that leaves one of them unfilled raises instead of silently keeping random or stale weights.
    """
    raw = _torch_load_weights_only(path)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or {{'model': state dict}}, got {type(state).__name__}")
    renamed, unexpected, ignored = lavis_to_kit(state)
    report = _load_into(model, renamed, path, ignored)
    report.unexpected = sorted(set(report.unexpected) | set(unexpected))
    for prefix in require:
        gaps = [k for k in report.missing if k.startswith(prefix)]
        if gaps:
            raise ValueError(f"{path}: does not hold {prefix.rstrip('.')} weights (e.g. {gaps[:3]}); "
                             f"merge it with a checkpoint that does (official checkpoints)")
    return report


# ---- the kit's own format: the bridges only ----------------------------------------------------------------
BRIDGES_FILE, CONFIG_FILE = "bridges.safetensors", "sevila_config.json"


def save_bridges(model: SeViLA, directory: str | Path, which: str = "both") -> Path:
    """Save the trainable bridges (safetensors) and the model config (JSON). Atomic: no half-written file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(BRIDGES) if which == "both" else [which]
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k.split(".")[0] in names}
    save_safetensors(state, directory / BRIDGES_FILE)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(model.config.to_dict(), indent=2, default=str))
    return directory


def load_bridges(model: SeViLA, directory: str | Path) -> LoadReport:
    """Load bridges saved by `save_bridges`; every key in the file must belong to the model."""
    state = read_safetensors(Path(directory) / BRIDGES_FILE, device=str(model.device))
    report = _load_into(model, state, directory)
    if report.unexpected:
        raise ValueError(f"{directory}: keys the model does not have: {report.unexpected[:5]}")
    report.missing = [k for k in report.missing if k.split(".")[0] in {k2.split(".")[0] for k2 in state}]
    return report
