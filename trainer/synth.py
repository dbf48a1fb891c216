"""Text to speech with the base CSM plus a published adapter: long text, voice prompts, batches.

    voice = Synthesizer.from_store(settings, phase=3)
    speech = voice.speak("Okay lah, saya pergi dulu. Jumpa esok!", voice="speaker_01")
    speech.samples, speech.sample_rate, speech.pieces   # each piece's budget and whether it ran out

The text is cut into pieces (trainer/pieces.py: sentences, then clauses, each in its spoken form);
each piece is generated with a frame budget from its length and the pieces are joined with short
pauses. A piece that uses its whole budget without CSM's end-of-audio frame may have been cut
short: it is logged and marked (`hit_budget`) in the result and in every manifest, never hidden.

A voice prompt is CSM's way of cloning: a reference clip and its transcript go before the text
as an earlier turn of the same speaker (the layout trainer/loss.py trains context turns with).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from infra.settings import PreprocessSettings, Settings
from infra.storage import Store
from preprocess.text import analyze
from trainer.checkpoint import CheckpointError, fetch_adapter, published_speakers
from trainer.loss import csm_parts, turn_ids
from trainer.pieces import Piece, split_text

log = logging.getLogger(__name__)
# Silence after a piece, by the boundary it ends at: short enough to sound like one speaker
# going on, long enough to mark the sentence or paragraph.
PAUSE_S = {"word": 0.08, "clause": 0.18, "sentence": 0.35, "paragraph": 0.7}
FADE_S = 0.01  # edges of each piece, so a cut waveform does not click
AUDIO_FORMATS = ("wav", "flac")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SynthOptions:
    """How speech is sampled and how long each piece may run."""

    seed: int = 1234
    temperature: float = 0.9  # 0 = greedy
    top_k: int = 50  # 0 = no top-k filter
    max_chars: int = 160  # piece length (Latin letters; a Hanzi counts 4)
    # A piece's budget: its length said at the slowest plausible rate, plus headroom. Training
    # rejects clips under 2 letters/s as transcript errors; 7 letters/s is a slow, clear reading.
    slowest_chars_per_s: float = 7.0
    headroom_s: float = 2.0
    max_seconds: float | None = None  # a cap on each piece's budget (a piece that reaches it is reported)
    speed: float = 1.0  # time-stretch of the result (0.25-4.0, as OpenAI's API)

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature {self.temperature} must be >= 0")
        if self.top_k < 0:
            problems.append(f"top_k {self.top_k} must be >= 0")
        if self.max_chars < 20:
            problems.append(f"max_chars {self.max_chars} must be at least 20 (a clause)")
        if self.slowest_chars_per_s <= 0 or self.headroom_s < 0:
            problems.append("slowest_chars_per_s must be > 0 and headroom_s >= 0")
        if self.max_seconds is not None and self.max_seconds <= 0:
            problems.append(f"max_seconds {self.max_seconds} must be > 0")
        if not 0.25 <= self.speed <= 4.0:
            problems.append(f"speed {self.speed} must be between 0.25 and 4.0")
        if problems:
            raise ValueError("; ".join(problems))

    def budget_frames(self, piece: Piece, frame_rate: float) -> int:
        seconds = piece.length / self.slowest_chars_per_s + self.headroom_s
        if self.max_seconds is not None:
            seconds = min(seconds, self.max_seconds)
        return max(1, math.ceil(seconds * frame_rate))


@dataclass(frozen=True)
class VoicePrompt:
    """A reference clip of the voice (mono, the codec's rate, cleaned as training clips are) and
    its transcript's spoken form."""

    text: str
    audio: np.ndarray
    source: str = ""

    @classmethod
    def from_file(cls, path: Path, transcript: str, preprocess: PreprocessSettings) -> VoicePrompt:
        from preprocess.audio import AudioError, clean, decode

        spoken = analyze(transcript).normalized
        if not spoken:
            raise ValueError(f"voice prompt {path}: the transcript is empty; give the words said in the clip")
        try:
            samples, rate = decode(Path(path).read_bytes())
            cleaned = clean(samples, rate, preprocess)
        except FileNotFoundError:
            raise ValueError(f"voice prompt {path}: no such file") from None
        except AudioError as exc:
            raise ValueError(f"voice prompt {path}: {exc} ({exc.reason}); use a clean clip of "
                             f"{preprocess.min_duration_s}-{preprocess.max_duration_s} s") from None
        return cls(spoken, cleaned.samples, str(path))


@dataclass(frozen=True)
class PieceReport:
    text: str
    boundary: str
    budget_frames: int
    frames: int
    hit_budget: bool  # the whole budget was used without an end-of-audio frame: maybe cut short


@dataclass
class Speech:
    samples: np.ndarray  # mono float32
    sample_rate: int
    text: str
    voice: str | None
    pieces: list[PieceReport] = field(default_factory=list)
    prompt: str | None = None  # the voice prompt's clip, if one was used

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def hit_budget(self) -> list[int]:
        """Indices of the pieces that may have been cut short."""
        return [i for i, p in enumerate(self.pieces) if p.hit_budget]

    def record(self) -> dict[str, Any]:
        return {"text": self.text, "voice": self.voice, "prompt": self.prompt, "seconds": round(self.seconds, 3),
                "sample_rate": self.sample_rate, "hit_budget": len(self.hit_budget),
                "pieces": [asdict(p) for p in self.pieces]}


# -- generation (a loaded CsmForConditionalGeneration, LoRA layers merged or in place) ------------
def prompt_ids(tokenizer: Any, config: Any, speaker: int, text: str, prompt_text: str | None = None,
               prompt_frames: int = 0) -> list[int]:
    """The backbone's input: an optional earlier turn of the same speaker (its text, one audio
    token per codec frame, audio end), then the turn to say. The same layout as training's
    context turns (trainer/loss.py build_batch)."""
    ids = []
    if prompt_text is not None:
        ids += turn_ids(tokenizer, config, speaker, prompt_text)
        ids += [config.audio_token_id] * prompt_frames + [config.audio_eos_token_id]
    return ids + turn_ids(tokenizer, config, speaker, text)


def _prompt_frames(csm: Any, audio: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(csm.codec_model.encode(audio).audio_codes.shape[-1])


def generate_piece(csm: Any, tokenizer: Any, text: str, speaker: int, budget_frames: int, options: SynthOptions,
                   prompt: VoicePrompt | None = None) -> tuple[np.ndarray, int, bool]:
    """Sample one piece: (samples, frames generated, whether it used its whole budget without
    ending). Uses the global torch RNG: seed before calling."""
    cfg = csm.config
    extra: dict[str, Any] = {}
    prompt_text, frames_in_prompt = None, 0
    if prompt is not None:
        audio = torch.from_numpy(prompt.audio).to(csm.device, csm.dtype)[None, None]
        prompt_text, frames_in_prompt = prompt.text, _prompt_frames(csm, audio)
        extra = {"input_values": audio, "input_values_cutoffs": torch.tensor([[audio.shape[-1]]], device=csm.device)}
    ids = prompt_ids(tokenizer, cfg, speaker, text, prompt_text, frames_in_prompt)
    room = cfg.max_position_embeddings - len(ids) - 1
    if room < 1:
        raise ValueError(f"the prompt and text take {len(ids)} of the model's {cfg.max_position_embeddings} "
                         "positions; use a shorter voice prompt or smaller pieces (max_chars)")
    budget = min(budget_frames, room)
    input_ids = torch.tensor([ids], device=csm.device)
    # Ids past the codec's codebook are CSM specials; sampled as codes they would crash Mimi.
    outside = list(range(csm.codec_model.config.codebook_size, cfg.vocab_size))
    sampling = {"do_sample": options.temperature > 0}
    if options.temperature > 0:
        sampling.update(temperature=options.temperature, top_k=options.top_k or None)
    with torch.inference_mode():
        # eos_token_id=None: CSM ends on its end-of-audio frame, not a text token (and warns otherwise).
        codes = csm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=budget,
                             eos_token_id=None,
                             suppress_tokens=outside, depth_decoder_suppress_tokens=outside, **sampling,
                             **{f"depth_decoder_{k}": v for k, v in sampling.items()}, **extra)[0]
        # CSM stops after a frame whose codebooks (all but the last) are the end-of-audio id.
        ended = (codes[:, :-1] == cfg.codebook_eos_token_id).all(-1).nonzero()
        frames = int(ended[0, 0]) if len(ended) else codes.shape[0]
        if frames == 0:
            return np.zeros(0, np.float32), 0, False
        audio = csm.codec_model.decode(codes[:frames].transpose(0, 1).unsqueeze(0)).audio_values[0, 0]
    return audio.float().cpu().numpy(), frames, not len(ended) and frames >= budget


def speak(csm: Any, tokenizer: Any, text: str, speaker: int, options: SynthOptions,
          prompt: VoicePrompt | None = None, voice: str | None = None,
          pieces: list[Piece] | None = None) -> Speech:
    """Long text to one waveform: pieces generated in order from one seed, joined with pauses."""
    pieces = split_text(text, options.max_chars) if pieces is None else pieces
    if not pieces:
        raise ValueError("nothing to say: the text has no words after normalisation")
    rate = csm.codec_model.config.sampling_rate
    frame_rate = csm.codec_model.config.frame_rate
    torch.manual_seed(options.seed)
    parts, reports = [], []
    for i, piece in enumerate(pieces):
        budget = options.budget_frames(piece, frame_rate)
        samples, frames, hit = generate_piece(csm, tokenizer, piece.text, speaker, budget, options, prompt)
        if hit:
            log.warning("piece %d of %d used its whole budget of %d frames (%.1f s) without ending and may be cut "
                        "short: %r; raise max_seconds or lower max_chars", i + 1, len(pieces), budget,
                        budget / frame_rate, piece.text)
        reports.append(PieceReport(piece.text, piece.boundary, budget, frames, hit))
        parts.append(_faded(samples, rate))
        if i < len(pieces) - 1:
            parts.append(np.zeros(int(PAUSE_S[piece.boundary] * rate), np.float32))
    samples = np.concatenate(parts).astype(np.float32)
    if options.speed != 1.0 and len(samples):
        import librosa

        samples = librosa.effects.time_stretch(samples, rate=options.speed).astype(np.float32)
    return Speech(samples, rate, text, voice, reports, prompt.source if prompt else None)


def _faded(samples: np.ndarray, rate: int) -> np.ndarray:
    n = min(int(FADE_S * rate), len(samples) // 2)
    if n == 0:
        return samples.astype(np.float32)
    out = samples.astype(np.float32).copy()
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def generate(csm: Any, tokenizer: Any, text: str, speaker: int, max_seconds: float, seed: int) -> np.ndarray:
    """One short utterance, as one piece of at most `max_seconds` (training's audio samples)."""
    normalized = analyze(text).normalized
    if not normalized:
        raise ValueError("nothing to say: the text is empty")
    options = SynthOptions(seed=seed, max_seconds=max_seconds)
    torch.manual_seed(seed)
    budget = max(1, int(max_seconds * csm.codec_model.config.frame_rate))
    samples, _, _ = generate_piece(csm, tokenizer, normalized, speaker, budget, options)
    return samples


# -- a published phase, loaded ---------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceEntry:
    speaker_id: int  # the `[n]` CSM reads
    adapter: str | None  # the phase-4 adapter to activate (None: the one merged model)


class Synthesizer:
    """A published phase loaded for speech: the model, its tokenizer and the voices it offers.
    Phases 1-3: one adapter merged into the base, a voice per speaker of the data. Phase 4: one
    adapter per speaker on one base, switched per request."""

    def __init__(self, model: Any, tokenizer: Any, voices: dict[str, VoiceEntry], phase: int,
                 manifests: dict[str, dict[str, Any]]):
        self.model = model
        self.csm = csm_parts(model)
        self.tokenizer = tokenizer
        self.voices = voices
        self.phase = phase
        self.manifests = manifests  # adapter manifests by voice (phase 4) or "" (phases 1-3)
        self.sample_rate = int(self.csm.codec_model.config.sampling_rate)
        self._active: str | None = None

    @classmethod
    def from_store(cls, settings: Settings, phase: int, speaker: str | None = None) -> Synthesizer:
        from trainer.model import load_for_inference

        run = Store.for_run(settings)
        with tempfile.TemporaryDirectory(prefix="suara-voice-") as tmp:
            if phase != 4:
                manifest = fetch_adapter(run, phase, None, Path(tmp))
                _warn_if_incomplete(manifest, phase, None)
                model, tokenizer = load_for_inference(settings, Path(tmp), manifest.get("mode", "lora"))
                speakers: dict[str, int] = manifest.get("speakers", {})
                if speaker is not None and speaker not in speakers:
                    raise ValueError(f"unknown speaker {speaker!r}; phase {phase} knows {sorted(speakers)}")
                voices = {s: VoiceEntry(i, None) for s, i in speakers.items() if speaker in (None, s)}
                return cls(model, tokenizer, voices, phase, {"": manifest})
            names = [speaker] if speaker else published_speakers(run)
            if not names:
                raise CheckpointError(f"no phase 4 adapters at {run.uri('adapters/phase4')}; train them first: "
                                      "python -m trainer train --phase 4")
            manifests = {}
            for name in names:
                manifests[name] = fetch_adapter(run, 4, name, Path(tmp) / name)
                _warn_if_incomplete(manifests[name], 4, name)
            model, tokenizer = _load_speaker_adapters(settings, Path(tmp), manifests)
            voices = {n: VoiceEntry(m["speakers"][n], n if len(names) > 1 else None) for n, m in manifests.items()}
            return cls(model, tokenizer, voices, phase, manifests)

    @property
    def default_voice(self) -> str:
        return sorted(self.voices)[0]

    def speak(self, text: str, voice: str | None = None, options: SynthOptions | None = None,
              prompt: VoicePrompt | None = None, pieces: list[Piece] | None = None) -> Speech:
        voice = voice or self.default_voice
        entry = self.voices.get(voice)
        if entry is None:
            raise ValueError(f"unknown voice {voice!r}; this model has {sorted(self.voices)}")
        if entry.adapter is not None and entry.adapter != self._active:
            self.model.set_adapter(entry.adapter)
            self._active = entry.adapter
        return speak(self.csm, self.tokenizer, text, entry.speaker_id, options or SynthOptions(), prompt, voice,
                     pieces)


def _warn_if_incomplete(manifest: dict[str, Any], phase: int, speaker: str | None) -> None:
    if manifest.get("complete") is False:
        log.warning("the phase %d%s adapter is incomplete (%s steps; its run stopped early, e.g. at a budget cap)",
                    phase, f" {speaker}" if speaker else "", manifest.get("steps"))


def _load_speaker_adapters(settings: Settings, root: Path, manifests: dict[str, dict[str, Any]]) -> tuple[Any, Any]:
    """One speaker: its adapter merged. Several: every adapter loaded on one base (peft's named
    adapters), so a 24 GB GPU holds one 1B model however many speakers there are."""
    from trainer.model import load_base, load_for_inference

    names = list(manifests)
    modes = {m.get("mode", "lora") for m in manifests.values()}
    if len(names) == 1:
        return load_for_inference(settings, root / names[0], modes.pop())
    if modes != {"lora"}:
        raise ValueError("full fine-tunes are whole models, one per speaker: serve one at a time with --speaker")
    from peft import PeftModel

    base, tokenizer = load_base(settings)
    model = PeftModel.from_pretrained(base, str(root / names[0]), adapter_name=names[0], is_trainable=False)
    for name in names[1:]:
        model.load_adapter(str(root / name), adapter_name=name, is_trainable=False)
    return model.eval(), tokenizer


# -- command-line entry points ------------------------------------------------------------------
def synthesize(settings: Settings, phase: int, text: str, out: Path, speaker: str | None = None,
               options: SynthOptions | None = None, prompt_audio: Path | None = None,
               prompt_text: str | None = None) -> Speech:
    """`python -m trainer synth --text ...`: one text to one audio file (wav or flac by suffix)."""
    fmt = _format_of(out)
    voice = Synthesizer.from_store(settings, phase, speaker)
    prompt = _prompt(prompt_audio, prompt_text, settings)
    speech = voice.speak(text, speaker, options, prompt)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, speech.samples, speech.sample_rate, format=fmt.upper(), subtype="PCM_16")
    return speech


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"{path}: write .wav or .flac (got {path.suffix or 'no suffix'})")
    return fmt


def _prompt(audio: Path | None, text: str | None, settings: Settings) -> VoicePrompt | None:
    if (audio is None) != (text is None):
        raise ValueError("a voice prompt needs both the clip (--prompt-audio) and its transcript (--prompt-text)")
    return VoicePrompt.from_file(audio, text, settings.preprocess) if audio is not None else None


@dataclass(frozen=True)
class BatchRow:
    id: str
    text: str
    speaker: str | None = None
    prompt_audio: str | None = None
    prompt_text: str | None = None


@dataclass
class BatchReport:
    written: int
    skipped: int  # already in the folder from an earlier run
    failed: int
    hit_budget: int  # rows with at least one piece that may be cut short
    manifest: Path


def read_batch(path: Path) -> Iterator[BatchRow | tuple[str, str]]:
    """Rows of a JSONL file (`text`, optional `id`, `speaker`, `prompt_audio`, `prompt_text`) or a
    TSV file (`text`, `id<TAB>text` or `id<TAB>text<TAB>speaker`; a first line naming the columns is
    a header). A bad row is yielded as (row id, reason) and the rest go on."""
    fields = set(BatchRow.__dataclass_fields__)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header: list[str] | None = None
    for n, line in enumerate(lines, 1):
        fallback = f"row{n:06d}"
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield fallback, f"line {n} is not JSON: {exc}"
                continue
            if not isinstance(obj, dict):
                yield fallback, f"line {n} is not a JSON object"
                continue
        else:
            cells = line.split("\t")
            if n == 1 and "text" in (c.strip().lower() for c in cells):
                header = [c.strip().lower() for c in cells]
                continue
            names = header or (["text"], ["id", "text"], ["id", "text", "speaker"])[min(len(cells), 3) - 1]
            if len(cells) > len(names):
                yield fallback, f"line {n} has {len(cells)} columns, expected {len(names)} ({', '.join(names)})"
                continue
            obj = dict(zip(names, cells, strict=False))
        unknown = sorted(set(obj) - fields)
        row_id = str(obj.get("id") or fallback)
        if unknown:
            yield row_id, f"line {n}: unknown fields {unknown}; expected {sorted(fields)}"
        elif not isinstance(obj.get("text"), str) or not obj["text"].strip():
            yield row_id, f"line {n}: no text"
        elif not SAFE_ID.match(row_id):
            yield row_id, f"line {n}: id {row_id!r} cannot name a file; use letters, digits, '.', '_', '-'"
        else:
            yield BatchRow(**{**{k: (str(v) if v is not None else None) for k, v in obj.items()}, "id": row_id})


def synthesize_batch(settings: Settings, phase: int, batch: Path, out_dir: Path, speaker: str | None = None,
                     options: SynthOptions | None = None, fmt: str = "wav", progress: bool = True) -> BatchReport:
    """`python -m trainer synth --batch FILE --out DIR`: one audio file per row and `manifest.jsonl`
    (one line per row: the file, seconds, pieces and their budgets, or the row's error). Rows
    already written by an earlier run are kept, so a stopped batch resumes."""
    from tqdm import tqdm

    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {AUDIO_FORMATS}")
    rows = list(read_batch(batch))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    done = _finished_rows(manifest, out_dir)
    voice = Synthesizer.from_store(settings, phase, speaker)
    prompts: dict[tuple[str, str], VoicePrompt] = {}
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    written = skipped = 0
    with manifest.open("a", encoding="utf-8") as log_file:
        for row in tqdm(rows, desc="synth", unit="row", disable=not progress):
            if isinstance(row, tuple):
                entry = {"id": row[0], "status": "error", "error": row[1]}
            elif row.id in seen:
                entry = {"id": row.id, "status": "error", "error": f"duplicate id {row.id!r}; ids name the files"}
            elif row.id in done:
                entry = done[row.id]
                skipped += 1
            else:
                entry = _batch_row(voice, row, batch.parent, out_dir, fmt, options, prompts, settings, speaker)
                written += entry["status"] == "ok"
                log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
                log_file.flush()  # a crash keeps what was written
            if isinstance(row, BatchRow):
                seen.add(row.id)
            entries.append(entry)
    # One line per row, in the batch's order (the appended log may hold a resumed run's retries).
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    failed = sum(e["status"] != "ok" for e in entries)
    hit = sum(1 for e in entries if e.get("hit_budget"))
    return BatchReport(written, skipped, failed, hit, manifest)


def _finished_rows(manifest: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that row is simply done again
            if entry.get("status") == "ok" and (out_dir / entry.get("file", "")).is_file():
                done[entry["id"]] = entry
    return done


def _batch_row(voice: Synthesizer, row: BatchRow, base: Path, out_dir: Path, fmt: str, options: SynthOptions | None,
               prompts: dict[tuple[str, str], VoicePrompt], settings: Settings, speaker: str | None) -> dict[str, Any]:
    try:
        prompt = None
        if row.prompt_audio or row.prompt_text:
            key = (row.prompt_audio or "", row.prompt_text or "")
            if key not in prompts:
                audio = Path(row.prompt_audio) if row.prompt_audio else None
                prompts[key] = _prompt(base / audio if audio else None, row.prompt_text, settings)
            prompt = prompts[key]
        speech = voice.speak(row.text, row.speaker or speaker, options, prompt)
    except ValueError as exc:
        return {"id": row.id, "status": "error", "error": str(exc)}
    except Exception as exc:  # one row's failure (out of memory, a model error) must not end the batch
        log.exception("row %s failed", row.id)
        return {"id": row.id, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    name = f"{row.id}.{fmt}"
    staging = out_dir / f".{name}.tmp"
    sf.write(staging, speech.samples, speech.sample_rate, format=fmt.upper(), subtype="PCM_16")
    staging.replace(out_dir / name)  # a file in the folder is always whole
    return {"id": row.id, "status": "ok", "file": name, **speech.record()}

