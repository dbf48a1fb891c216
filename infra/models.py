"""Where models come from: a name -> a local folder or hub id, and the device they run on.

`tiny` names a small randomly initialised CSM + Mimi + byte-level tokenizer, built offline and
deterministically on first use and cached like a downloaded checkpoint, so the same
`from_pretrained` code loads it and the real `sesame/csm-1b` / `kyutai/mimi`. Preprocessing loads the
codec and training the CSM from here; neither owns the other's model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY = "tiny"
TINY_BUNDLE = "tiny-csm-v1"  # bump when the recipe below changes
TINY_SEED = 20260101
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|AUDIO|>", "<|audio_eos|>"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tiny_bundle(cache_dir: Path) -> Path:
    """Path of the tiny CSM bundle, building it on first use (atomic: safe for parallel callers)."""
    target = Path(cache_dir) / TINY_BUNDLE
    if (target / "config.json").is_file() and (target / "codec" / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_BUNDLE}-", dir=target.parent))
    try:
        _build_tiny_bundle(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE without merges: every UTF-8 text maps to bytes, no training data needed.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[1], pad_token=SPECIAL_TOKENS[2]
    )


def _build_tiny_bundle(out: Path) -> None:
    from transformers import CsmConfig, CsmDepthDecoderConfig, CsmForConditionalGeneration, MimiConfig

    tokenizer = _tiny_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    codebooks, codebook_size = 8, 64
    # Mimi's real strides (8*6*5*4 * 2 = 1920 samples per frame at 24 kHz = 12.5 frames/s), tiny widths.
    mimi = MimiConfig(
        hidden_size=32, num_filters=4, num_residual_layers=1, upsampling_ratios=[8, 6, 5, 4],
        codebook_size=codebook_size, codebook_dim=16, num_quantizers=codebooks,
        vector_quantization_hidden_dimension=16, upsample_groups=32, num_hidden_layers=1,
        intermediate_size=64, num_attention_heads=2, num_key_value_heads=2, head_dim=16, sliding_window=32,
    )
    vocab = codebook_size + 3  # CSM's audio vocab = codebook + specials (2048 + 3 = 2051 for the real one)
    depth = CsmDepthDecoderConfig(
        num_codebooks=codebooks, backbone_hidden_size=64, vocab_size=vocab, hidden_size=32,
        intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=codebooks + 1,
    )
    config = CsmConfig(
        num_codebooks=codebooks, vocab_size=vocab, text_vocab_size=len(tokenizer), hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, pad_token_id=ids[2], bos_token_id=ids[0], eos_token_id=ids[1],
        audio_token_id=ids[3], audio_eos_token_id=ids[4], codebook_pad_token_id=vocab - 1,
        codebook_eos_token_id=0, depth_decoder_config=depth.to_dict(), codec_config=mimi.to_dict(),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CsmForConditionalGeneration(config)
        # A fresh Mimi has all-zero codebooks (every code would be 0): give it random ones.
        for name, buffer in model.codec_model.named_buffers():
            if name.endswith("codebook.embed_sum"):
                buffer.copy_(torch.randn_like(buffer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.codec_model.save_pretrained(out / "codec")


def model_source(name: str, cache_dir: Path) -> str:
    """What `CsmForConditionalGeneration.from_pretrained` should load for the setting `model`."""
    return str(tiny_bundle(cache_dir)) if name == TINY else name


def codec_source(name: str, cache_dir: Path) -> str:
    """What `MimiModel.from_pretrained` should load for the setting `codec`."""
    return str(tiny_bundle(cache_dir) / "codec") if name == TINY else name
