"""The similarity scorer (Table 6's CLIP row) loads CLIP folders, scores (B, T) frames, and the shipped mini CLIP
ranks a question's relevant frames above its irrelevant ones; its training is bit-for-bit deterministic."""
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from sevila_lib import mini, mini_clip, paths
from sevila_lib.similarity import SimilarityScorer
from sevila_lib.video import frames_to_tensor, relevant_frame_mask
from sevila_lib.world import MomentsWorld, WorldFrameReader


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, tokenizer):
    """A tiny random CLIPModel (16-pixel images) and a T5-style tokenizer, saved as `save_pretrained` lays out
    openai/clip-vit-base-patch32."""
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
                        vision_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=64),
                        projection_dim=16)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_scorer_loads_a_saved_clip_folder_and_scores_every_frame(tiny_clip_dir):
    scorer = SimilarityScorer.from_pretrained(tiny_clip_dir)
    assert scorer.image_size == 16
    pixels = torch.randn(2, 5, 3, 16, 16)  # (B, T, 3, H, W)
    scores = scorer.score(pixels, ["what colour is the ball?", "why does the person lie down?"])
    assert scores.shape == (2, 5) and scores.dtype == torch.float32
    assert scores.abs().max() <= 1 + 1e-5  # cosine similarities
    assert torch.equal(scores, scorer.score(pixels, ["what colour is the ball?", "why does the person lie down?"]))
    # One frame scored alone gets the same score: frames do not interact.
    alone = scorer.score(pixels[1:, 2:3], ["why does the person lie down?"])
    torch.testing.assert_close(alone[0, 0], scores[1, 2])
    with pytest.raises(ValueError, match="B texts"):
        scorer.score(pixels, ["one text for two questions"])


def test_text_embedding_pools_at_the_end_of_text_token_whatever_the_padding(tiny_clip_dir):
    scorer = SimilarityScorer.from_pretrained(tiny_clip_dir)
    ids = scorer.tokenizer(["what colour is the ball?"])["input_ids"][0]
    assert ids[-1] == scorer.clip.config.text_config.eos_token_id  # CLIPTextModel pools there
    short = "what colour is the ball?"
    padded = scorer.embed_texts([short, "why does the person lie down without wearing her footwear?"])[0]
    torch.testing.assert_close(padded, scorer.embed_texts([short])[0])


def test_frames_of_another_size_are_resized_to_the_clip_input(tiny_clip_dir):
    scorer = SimilarityScorer.from_pretrained(tiny_clip_dir)
    torch.manual_seed(2)
    large = torch.randn(1, 3, 3, 32, 32)
    resized = F.interpolate(large[0], size=(16, 16), mode="bilinear", align_corners=False, antialias=True)[None]
    torch.testing.assert_close(scorer.score(large, ["a"]), scorer.score(resized, ["a"]))


def test_fingerprint_follows_the_weights(tiny_clip_dir):
    scorer = SimilarityScorer.from_pretrained(tiny_clip_dir)
    assert scorer.fingerprint == SimilarityScorer.from_pretrained(tiny_clip_dir).fingerprint
    with torch.no_grad():
        scorer.clip.visual_projection.weight[0, 0] += 1.0
    assert scorer.fingerprint != SimilarityScorer.from_pretrained(tiny_clip_dir).fingerprint


def test_training_texts_are_true_of_exactly_the_relevant_frames_of_the_video_questions():
    """`text_relevance` reads a question back into the frames it is answerable from; on the val video questions
    (used here only to check the templates, never for training) it agrees with the world's moments."""
    world = MomentsWorld()
    for sample in [s for s in world.qa_samples("val") if s.question_type != "counting"][:60]:
        scenes = world.scenes(sample.video)
        predicted = [mini_clip.text_relevance(sample.question)(s) for s in scenes]
        assert predicted == relevant_frame_mask(range(len(scenes)), world.config.fps, sample.moments), sample.question


def test_shipped_mini_clip_ranks_relevant_frames_above_irrelevant_ones():
    """The card's margin, recomputed on 20 val questions: relevant frames are more similar to the question."""
    scorer = SimilarityScorer.from_pretrained("mini")
    assert scorer.image_size == 32 and "similarity top-4" in (paths.MINI_CLIP_DIR / "README.md").read_text()
    world = MomentsWorld()
    reader = WorldFrameReader(world)
    samples = [s for s in world.qa_samples("val") if s.question_type != "counting"][:20]
    pixels = torch.stack([frames_to_tensor(reader.read(s, range(32)), 32) for s in samples])  # (20, 32, 3, 32, 32)
    scores = scorer.score(pixels, [s.question for s in samples])
    relevant = torch.tensor([relevant_frame_mask(range(32), world.config.fps, s.moments) for s in samples])
    relevant_mean = (scores * relevant).sum(1) / relevant.sum(1)
    irrelevant_mean = (scores * ~relevant).sum(1) / (~relevant).sum(1)
    assert relevant_mean.mean() > irrelevant_mean.mean() + 0.2  # the card: +0.585 on all 150 val questions


def test_mini_clip_training_is_bit_for_bit_deterministic(tmp_path):
    """The same command gives the same weights: two short runs write identical safetensors."""
    config = mini_clip.TrainConfig(steps=2, videos_per_batch=2, frames_per_video=4, warmup_steps=1)
    digests = []
    for run in ("a", "b"):
        mini_clip.train(config, tmp_path / run, log=lambda *_: None)
        digests.append(mini.file_digest(tmp_path / run / "model.safetensors"))
    assert digests[0] == digests[1]
    assert digests[0] != mini.file_digest(paths.MINI_CLIP_DIR / "model.safetensors")
