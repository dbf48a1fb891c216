"""The tiny offline CSM bundle and the Mimi codec path."""

from __future__ import annotations

import numpy as np

from infra.models import tiny_bundle
from infra.storage import sha256_file
from preprocess.codec import Codec


def test_tiny_bundle_is_deterministic_across_builds(tmp_path, cache_dir):
    first = tiny_bundle(cache_dir)
    second = tiny_bundle(tmp_path / "elsewhere")
    for name in ("model.safetensors", "codec/model.safetensors", "tokenizer.json"):
        assert sha256_file(first / name) == sha256_file(second / name), name


def test_mimi_codes_have_12_5_frames_per_second_and_stay_in_the_codebook(cache_dir):
    codec = Codec.load("tiny", cache_dir)
    seconds = 2.4
    t = np.arange(int(seconds * 24_000)) / 24_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    codes = codec.encode(audio)
    assert codes.shape == (round(seconds * 12.5), codec.num_codebooks)
    assert codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < codec.model.config.codebook_size
    assert len(np.unique(codes)) > 1  # random codebooks, not the all-zero default
    assert codec.decode(codes).shape == (codes.shape[0] * 1920,)


def test_batched_encoding_gives_each_clip_the_codes_it_gets_alone(cache_dir):
    codec = Codec.load("tiny", cache_dir)
    rng = np.random.default_rng(1)
    clips = [rng.normal(0, 0.1, n).astype(np.float32) for n in (50_000, 70_001, 1_920 * 3)]
    batched = codec.encode_batch(clips)
    for clip, codes in zip(clips, batched, strict=True):
        assert codes.shape[0] == -(-len(clip) // 1920)
        assert np.array_equal(codes, codec.encode(clip))
