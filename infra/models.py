"""Where models come from: a name -> a local folder or hub id, and the device they run on.

Three kinds of name, and a model and its codec must be of the same kind:
- `tiny`: a small randomly initialised CSM + Mimi + byte-level tokenizer (8 codebooks), for tests
  and the embedded local run;
- `random:sesame/csm-1b` and `random:kyutai/mimi`: the real shapes (transformers' `CsmConfig()` and
  `MimiConfig()` defaults: a 16-layer 2048-wide Llama backbone, a 4-layer depth decoder over 32
  codebooks, a 128k text vocabulary) with random weights and a byte-level stand-in tokenizer that
  keeps the real one's special-token ids. They exercise every memory and speed path of the real
  model without a download;
- anything else: a hub id or local folder of a pretrained checkpoint (`sesame/csm-1b`, `kyutai/mimi`).

Generated bundles are built offline and deterministically on first use, under a versioned folder
name, and cached like a downloaded checkpoint, so the same `from_pretrained` code loads them and
the real ones. Building is atomic (a staging folder renamed into place) and, for the large ones,
serialised by a lock file so parallel callers build once. Preprocessing loads the codec and
training the CSM from here; neither owns the other's model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from infra.file_lock import exclusive

if TYPE_CHECKING:  # torch is imported by what loads a model, not by the settings that name one
    import torch

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_BUNDLE = "tiny-csm-v1"  # bump when the recipe below changes
TINY_SEED = 20260101
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|AUDIO|>", "<|audio_eos|>"]

RANDOM_PREFIX = "random:"
RANDOM_CSM = "random:sesame/csm-1b"
RANDOM_MIMI = "random:kyutai/mimi"
RANDOM_PAIRS = {RANDOM_CSM: RANDOM_MIMI}  # each generated CSM carries this generated Mimi inside
RANDOM_CSM_BUNDLE = "random-csm-1b-v1"  # bump when the recipe below changes
RANDOM_MIMI_BUNDLE = "random-mimi-v1"
RANDOM_SEED = 20261101

# The real CSM-1B tokenizer is Llama 3.2's: 128000 BPE tokens, then 256 special tokens, two of which
# CSM renames for audio. CsmConfig's defaults use bos 128000, audio 128002, audio_eos 128003, and
# pad 128002, which is the audio token; the processor would then read padding as audio frames, so
# the generated bundle pads with Llama's own right-pad token instead.
TEXT_VOCAB = 128_000
LLAMA3_SPECIALS = {
    128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128002: "<|AUDIO|>", 128003: "<|audio_eos|>",
    128004: "<|finetune_right_pad_id|>", 128005: "<|reserved_special_token_2|>",
    128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>",
    128010: "<|python_tag|>",
    **{i: f"<|reserved_special_token_{i - 128008}|>" for i in range(128011, 128256)},
}
BOS_ID, EOS_ID, AUDIO_ID, AUDIO_EOS_ID, PAD_ID = 128000, 128001, 128002, 128003, 128004


def kind_of(name: str) -> str:
    """"tiny", "random" or "pretrained"."""
    if name == TINY:
        return "tiny"
    return "random" if name.startswith(RANDOM_PREFIX) else "pretrained"


def pairing_error(model: str, codec: str) -> str | None:
    """Why a model and a codec cannot be used together, or None when they can."""
    known = sorted([*RANDOM_PAIRS, *RANDOM_PAIRS.values()])
    for name in (model, codec):
        if kind_of(name) == "random" and name not in known:
            return f"{name!r} is not a generated model; the generated ones are {', '.join(known)}"
    if kind_of(model) != kind_of(codec):
        return (f"model {model!r} and codec {codec!r} do not fit together: a generated CSM carries its own "
                "generated Mimi and a pretrained CSM needs the pretrained Mimi; use model=tiny with codec=tiny, "
                f"model={RANDOM_CSM} with codec={RANDOM_MIMI}, or a real CSM with a real Mimi "
                "(e.g. model=sesame/csm-1b codec=kyutai/mimi)")
    if kind_of(model) == "random" and RANDOM_PAIRS.get(model) != codec:
        return f"model {model!r} carries the codec {RANDOM_PAIRS.get(model)!r}, not {codec!r}"
    return None


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# -- the cache -----------------------------------------------------------------------------------
def _complete(target: Path) -> bool:
    return (target / "config.json").is_file()


def cached_bundle(cache_dir: Path, name: str, build: Callable[[Path], None], lock: bool = False) -> Path:
    """`cache_dir/name`, built by `build(staging_dir)` on first use and renamed into place (atomic:
    a reader never sees half a bundle). `lock`: parallel callers wait for one build instead of each
    building (for bundles that take minutes and gigabytes)."""
    target = Path(cache_dir) / name
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    guard = exclusive(target.parent / f".{name}.lock") if lock else contextlib.nullcontext()
    with guard:
        if _complete(target):  # built by the caller we waited for
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            build(staging)
            try:
                os.rename(staging, target)
            except OSError:  # another process finished first
                if not _complete(target):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# -- tiny ----------------------------------------------------------------------------------------
def tiny_bundle(cache_dir: Path) -> Path:
    """Path of the tiny CSM bundle, building it on first use (atomic: safe for parallel callers)."""
    return cached_bundle(cache_dir, TINY_BUNDLE, _build_tiny_bundle)


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
    import torch
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
        _randomise_codebooks(model.codec_model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.codec_model.save_pretrained(out / "codec")


def _randomise_codebooks(mimi) -> None:
    import torch

    # A fresh Mimi has all-zero codebooks (every code would be 0): give it random ones.
    for name, buffer in mimi.named_buffers():
        if name.endswith("codebook.embed_sum"):
            buffer.copy_(torch.randn_like(buffer))


# -- the real shapes, random weights -------------------------------------------------------------
def real_layout_tokenizer():
    """A byte-level stand-in for CSM-1B's tokenizer: ids 0..255 are the bytes, 256..127999 are
    placeholders no text ever produces (a BPE without merges only emits single bytes), and
    128000..128255 are Llama 3's special tokens with CSM's audio names, at the real ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({f"<|placeholder_{i}|>": i for i in range(len(vocab), TEXT_VOCAB)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([LLAMA3_SPECIALS[i] for i in sorted(LLAMA3_SPECIALS)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=LLAMA3_SPECIALS[BOS_ID],
                                        eos_token=LLAMA3_SPECIALS[EOS_ID], pad_token=LLAMA3_SPECIALS[PAD_ID])
    if tokenizer.convert_tokens_to_ids(list(LLAMA3_SPECIALS.values())) != list(LLAMA3_SPECIALS):
        raise RuntimeError("the stand-in tokenizer's special tokens did not land on Llama 3's ids")
    return tokenizer


def random_mimi_config():
    """`MimiConfig()`: kyutai/mimi's shape (32 codebooks of 2048, 24 kHz, 12.5 frames/s)."""
    from transformers import MimiConfig

    return MimiConfig()


def random_csm_config():
    """`CsmConfig()` (CSM-1B's shape) with the stand-in tokenizer's ids and the generated Mimi."""
    from transformers import CsmConfig

    return CsmConfig(pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, audio_token_id=AUDIO_ID,
                     audio_eos_token_id=AUDIO_EOS_ID, codec_config=random_mimi_config().to_dict())


def random_mimi_bundle(cache_dir: Path) -> Path:
    return cached_bundle(cache_dir, RANDOM_MIMI_BUNDLE, _build_random_mimi, lock=True)


def random_csm_bundle(cache_dir: Path) -> Path:
    """The full-size random CSM-1B (about 1.6 B parameters, 3.3 GB in bf16); minutes to build once."""
    mimi = random_mimi_bundle(cache_dir)
    return cached_bundle(cache_dir, RANDOM_CSM_BUNDLE, lambda out: _build_random_csm(out, mimi), lock=True)


def _build_random_mimi(out: Path) -> None:
    import torch
    from transformers import MimiModel

    log.info("building the random kyutai/mimi-shaped codec in %s (once)", out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        mimi = MimiModel(random_mimi_config())
        _randomise_codebooks(mimi)
    mimi.save_pretrained(out)


def _build_random_csm(out: Path, mimi_dir: Path) -> None:
    import torch
    from transformers import CsmForConditionalGeneration, MimiModel

    log.info("building the random sesame/csm-1b-shaped model in %s (once; takes minutes)", out)
    config = random_csm_config()
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED + 1)
        # Built and stored in bf16 (the dtype the real checkpoint is used in): half the memory,
        # time and disk of fp32. Loading in fp32 on CPU upcasts it.
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = CsmForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    # The codec inside is exactly the generated Mimi that preprocessing encodes with (kept in fp32).
    model.codec_model = MimiModel.from_pretrained(mimi_dir, dtype=torch.float32)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out)
    real_layout_tokenizer().save_pretrained(out)


# -- names -> sources ----------------------------------------------------------------------------
def model_source(name: str, cache_dir: Path) -> str:
    """What `CsmForConditionalGeneration.from_pretrained` should load for the setting `model`."""
    if name == TINY:
        return str(tiny_bundle(cache_dir))
    if name == RANDOM_CSM:
        return str(random_csm_bundle(cache_dir))
    return name


def codec_source(name: str, cache_dir: Path) -> str:
    """What `MimiModel.from_pretrained` should load for the setting `codec`."""
    if name == TINY:
        return str(tiny_bundle(cache_dir) / "codec")
    if name == RANDOM_MIMI:
        return str(random_mimi_bundle(cache_dir))
    return name
