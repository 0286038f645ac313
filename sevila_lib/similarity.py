"""Image-text similarity as a keyframe scorer: the "+ CLIP (ViT-B/32 similarity, top-4)" row of Table 6.

SeViLA's Table 6 compares its Localizer with other keyframe selectors (4 of 32 frames, NExT-QA zero-shot) that
score the n sampled frames some other way; one of them embeds every frame and the question with CLIP and keeps
the k frames most similar to the question. `SimilarityScorer` is that scorer: frame_scores = cosine similarity
of CLIP's normalised image and text embeddings (higher = more relevant), one text per question, (B, T) scores
that any selection rule (`selection.py`) turns into keyframes exactly as it does the Localizer's. By name it is
the `similarity` scorer of `scorers.py`.

Models load through transformers' `CLIPModel` and the tokenizer saved beside it:
* "mini" (default): the kit's mini CLIP in `data/mini_clip`, trained contrastively on single frames of the
  moments world (`sevila_lib/mini_clip.py`), so the row runs on a laptop CPU;
* `openai/clip-vit-base-patch32`, the paper's choice for real videos, by hub id (online) or as a local folder
  written by `save_pretrained`.

Pixels are the kit's own frames (`video.frames_to_tensor`): resized straight to S x S and normalised with CLIP's
mean/std, the input BLIP-2 gets. CLIP uses the same mean/std, so they are valid CLIP input; the official CLIP
preprocessing would centre-crop instead of squashing the aspect ratio, a small difference we accept so both
models read the same frames. Frames of another size are resized (bilinear, antialiased) to the CLIP model's
`vision_config.image_size`; resizing normalised pixels equals normalising resized ones (both are linear).
Used by `notebooks/07_keyframe_selectors.ipynb` (Table 6 and the field's selectors).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoTokenizer, CLIPModel

from . import paths
from .evaluation import hash_weights


class SimilarityScorer(torch.nn.Module):
    """Scores each frame by its CLIP similarity with the question. `score(pixels (B, T, 3, H, W), texts) -> (B, T)`."""

    def __init__(self, clip: CLIPModel, tokenizer):
        super().__init__()
        self.clip = clip.eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "mini",
                        device: str | torch.device = "cpu") -> "SimilarityScorer":
        """"mini" = the shipped `data/mini_clip`; otherwise a `save_pretrained` folder or a hub id
        ("openai/clip-vit-base-patch32", the paper's model). The tokenizer is read from the same place."""
        source = paths.MINI_CLIP_DIR if str(name_or_path) == "mini" else name_or_path
        if str(name_or_path) == "mini" and not (paths.MINI_CLIP_DIR / "model.safetensors").exists():
            raise FileNotFoundError(f"no mini CLIP at {paths.MINI_CLIP_DIR}: "
                                    "run `python -m sevila_lib.mini_clip train`")
        clip = CLIPModel.from_pretrained(str(source), dtype=torch.float32)
        return cls(clip, AutoTokenizer.from_pretrained(str(source))).to(device)

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights and the input size, so callers can cache scores per model."""
        digest = hashlib.sha256(f"clip|{self.image_size}".encode())
        hash_weights(digest, self.clip)
        return digest.hexdigest()[:16]

    @torch.inference_mode()
    def embed_frames(self, pixels: Tensor) -> Tensor:
        """Normalised image embeddings of frames (N, 3, H, W) -> (N, D)."""
        pixels = pixels.to(self.device, torch.float32)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return F.normalize(self.clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> Tensor:
        """Normalised text embeddings, one per text -> (len(texts), D)."""
        # The tokenizer appends the end-of-text token CLIP pools at (text_config.eos_token_id); truncation keeps it.
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                                max_length=self.clip.config.text_config.max_position_embeddings).to(self.device)
        features = self.clip.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return F.normalize(features.pooler_output, dim=-1)

    @torch.inference_mode()
    def score(self, pixels: Tensor, texts: list[str]) -> Tensor:
        """Cosine similarity of every frame with its question's text.

        pixels: (B, T, 3, H, W) frames from `video.frames_to_tensor`; texts: B questions (the question alone,
        no options). Returns (B, T) float32 scores on the CPU, higher = more relevant.
        """
        if pixels.ndim != 5 or len(texts) != pixels.shape[0]:
            raise ValueError(f"expected pixels (B, T, 3, H, W) and B texts, got {tuple(pixels.shape)} and {len(texts)}")
        b, t = pixels.shape[:2]
        frames = self.embed_frames(pixels.flatten(0, 1)).unflatten(0, (b, t))  # (B, T, D)
        questions = self.embed_texts(texts)  # (B, D)
        return torch.einsum("btd,bd->bt", frames, questions).float().cpu()
