"""A published phase as a plain transformers checkpoint: the LoRA adapter merged into the base.

    python -m trainer export --phase 3 --to ./suara-phase3

DIR then holds `model.safetensors` + `config.json` + `generation_config.json` (a
CsmForConditionalGeneration, the codec inside it), the tokenizer, a CsmProcessor (feature
extractor + CSM's chat template) and README.md, a model card: the base and its licence, the
phases and their steps, hours of training data per phase and language, the evaluation figures
the run stored (if any), and the speakers' `[n]` ids. Anyone can load it with transformers alone:

    CsmForConditionalGeneration.from_pretrained(DIR); AutoProcessor.from_pretrained(DIR)

The folder appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from infra.settings import Settings
from infra.storage import Store
from preprocess.shards import DATA_PREFIX, read_data_manifest
from trainer.checkpoint import adapter_prefix, fetch_adapter, is_incomplete

log = logging.getLogger(__name__)
EVAL_PREFIX = "eval"
# CSM's conversation format (what trainer/loss.py turn_ids builds): bos, [speaker], text, eos,
# and for a turn with audio one <|AUDIO|> per codec frame (the processor expands it) then
# <|audio_eos|>. The chat template is not part of the transformers wheel, so it travels here.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- bos_token + '[' + message['role'] | string + ']' -}}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{{- eos_token -}}"
    "{%- for item in message['content'] if item['type'] == 'audio' -%}{{- '<|AUDIO|><|audio_eos|>' -}}{%- endfor -%}"
    "{%- endfor -%}"
)
KNOWN_LICENCES = {"sesame/csm-1b": "apache-2.0"}
PHASE_DATA = {1: "one language, no particle", 2: "code-switched", 3: "with discourse particles",
              4: "one speaker's utterances"}


def export(settings: Settings, phase: int, speaker: str | None, to: Path) -> Path:
    """Merge the phase's adapter into the base and write DIR (see the module docstring)."""
    from trainer.model import base_model_source, load_for_inference

    if phase == 4 and not speaker:
        raise ValueError("phase 4 has one adapter per speaker: give --speaker")
    if phase != 4 and speaker:
        raise ValueError("--speaker is for phase 4 only")
    to = Path(to).absolute()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ValueError(f"{to} exists and is not empty; export into a new or empty folder")
    run = Store.for_run(settings)
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{to.name}.export-", dir=to.parent))
    try:
        adapter = staging / "adapter"
        manifest = fetch_adapter(run, phase, speaker, adapter)
        if is_incomplete(manifest):
            log.warning("exporting an incomplete adapter (%s steps; its run stopped early)", manifest.get("steps"))
        model, tokenizer = load_for_inference(settings, adapter, manifest.get("mode", "lora"))
        shutil.rmtree(adapter)
        model.save_pretrained(staging, safe_serialization=True)
        # CSM takes no token_type_ids: without this, `model.generate(**processor(...))` is refused.
        tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = ["input_ids", "attention_mask"]
        tokenizer.save_pretrained(staging)
        _processor(tokenizer, model).save_pretrained(staging)
        card = model_card(run, settings, phase, speaker, manifest, base_model_source(settings), to.name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if to.exists():
            to.rmdir()  # empty: checked above
        os.rename(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return to


def _processor(tokenizer: Any, model: Any) -> Any:
    from transformers import CsmProcessor, EncodecFeatureExtractor

    rate = model.codec_model.config.sampling_rate
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0)
    return CsmProcessor(features, tokenizer, chat_template=CHAT_TEMPLATE)


# -- the model card ---------------------------------------------------------------------------------
def model_card(run: Store, settings: Settings, phase: int, speaker: str | None, manifest: dict[str, Any],
               base_source: str, folder: str = "DIR") -> str:
    base = manifest.get("base_model", settings.model)
    licence = base_licence(base, base_source)
    speakers: dict[str, int] = manifest.get("speakers", {})
    lineage = _lineage(run, phase, speaker)
    data = _data_section(run, settings, phase, speaker)
    evaluation = _evaluation_section(run, phase, speaker)
    name = f"phase {phase}" + (f", speaker {speaker}" if speaker else "")
    say_as = speakers.get(speaker, 0) if speaker else min(speakers.values(), default=0)
    lines = [
        "---",
        f"license: {licence['id']}",
        f"base_model: {base}",
        "library_name: transformers",
        "pipeline_tag: text-to-speech",
        "language: [ms, en, zh]",
        "tags: [csm, suara, malaysian, code-switching]",
        "---",
        "",
        f"# Suara: run `{manifest.get('run_id', settings.run_id)}`, {name}",
        "",
        f"Sesame CSM fine-tuned into a Malaysian multilingual voice (Malay, Malaysian English, pinyin, "
        f"code-switching, discourse particles), with the {manifest.get('mode', 'lora')} weights of {name} merged "
        "into the base: a plain transformers checkpoint, no adapter library needed.",
    ]
    if is_incomplete(manifest):
        lines += ["", f"**Incomplete:** this phase's run stopped early at step {manifest.get('steps')} "
                      "(for example at its budget cap); the weights are those of that step."]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoProcessor, CsmForConditionalGeneration",
        "",
        f'model = CsmForConditionalGeneration.from_pretrained("{folder}")  # this folder',
        f'processor = AutoProcessor.from_pretrained("{folder}")',
        'say = {"type": "text", "text": "Okay lah, saya pergi dulu."}',
        f'conversation = [{{"role": "{say_as}", "content": [say]}}]',
        "inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)",
        "audio = model.generate(**inputs, output_audio=True, max_new_tokens=125)  # 12.5 frames per second",
        'processor.save_audio(audio, "hello.wav")',
        "```",
        "",
        "Write numbers, amounts and times as words (the model was trained on the spoken form), or use "
        "Suara's `python -m trainer synth`, which normalises text and says long text piece by piece.",
        "",
        "Speakers (the role is the `[n]` CSM reads before the text):",
        "",
        "| speaker | role |",
        "|---|---|",
        *[f"| {s} | {i} |" for s, i in sorted(speakers.items(), key=lambda kv: kv[1])],
        "",
        "## Training",
        "",
        f"Base: `{base}`. Each phase continued the previous phase's weights.",
        "",
        "| phase | data | steps | complete | spend (USD) |",
        "|---|---|---|---|---|",
        *[f"| {p}{' ' + s if s else ''} | {PHASE_DATA[p]} | {m.get('steps', '?')} | "
          f"{'no' if is_incomplete(m) else 'yes'} | {m.get('spent_usd', '?')} |" for p, s, m in lineage],
        "",
        *data,
        "",
        "## Evaluation",
        "",
        *evaluation,
        "",
        "## Licence",
        "",
        licence["text"],
        "",
    ]
    return "\n".join(lines)


def base_licence(base: str, source: str) -> dict[str, str]:
    """The base's licence: known hub ids, the tiny test model, or a local base's own card."""
    if base == "tiny":
        return {"id": "other", "text": "The base is Suara's tiny test model: random weights built offline, with no "
                                       "upstream licence. It speaks noise; it exists to test the pipeline."}
    if base in KNOWN_LICENCES:
        ident = KNOWN_LICENCES[base]
        return {"id": ident, "text": f"The base `{base}` is released under {ident}; these merged weights are a "
                                     f"derivative and carry its terms (see https://huggingface.co/{base})."}
    card = Path(source) / "README.md"
    if card.is_file():
        for line in card.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
            if line.lower().startswith("license:"):
                ident = line.split(":", 1)[1].strip()
                return {"id": ident, "text": f"The base `{base}` declares license `{ident}` in its card; "
                                             "these merged weights carry its terms."}
    return {"id": "unknown", "text": f"The licence of the base `{base}` is not known here: read its card before "
                                     "sharing these weights, which carry its terms."}


def _lineage(run: Store, phase: int, speaker: str | None) -> list[tuple[int, str | None, dict[str, Any]]]:
    """The published adapters this one descends from, oldest first, with their manifests."""
    chain = []
    for p in range(1, phase + 1):
        key = f"{adapter_prefix(p, speaker if p == 4 else None)}/manifest.json"
        if run.exists(key):
            chain.append((p, speaker if p == 4 else None, run.get_json(key)))
    return chain


def _data_section(run: Store, settings: Settings, phase: int, speaker: str | None) -> list[str]:
    """Hours of training data per phase bucket (the data manifest) and per language (each word's
    aligned time in the shards)."""
    try:
        data = read_data_manifest(run)
    except FileNotFoundError:
        return ["## Data", "", "The run's data manifest is not in the store; no data figures."]
    buckets = [f"phase{p}/train" for p in range(1, min(phase, 3) + 1)]
    if phase == 4 and speaker:
        buckets.append(f"phase4/{speaker}/train")
    buckets = [b for b in buckets if b in data.get("buckets", {})]
    by_lang = {b: language_hours(run, b, settings.cache_dir) for b in buckets}
    langs = sorted({lang for hours in by_lang.values() for lang in hours})
    lines = ["## Data", "",
             f"{data.get('totals', {}).get('rows', '?')} input rows, "
             f"{data.get('quarantine', {}).get('count', 0)} quarantined; training splits used by this model, in "
             "hours (per language: the aligned time of each word's language; silence and pauses are not counted):",
             "", "| data | utterances | hours | " + " | ".join(langs) + " |",
             "|---|---|---|" + "---|" * len(langs)]
    for bucket in buckets:
        stats = data["buckets"][bucket]
        per = " | ".join(f"{by_lang[bucket].get(lang, 0.0):.3f}" for lang in langs)
        lines.append(f"| {bucket} | {stats['samples']} | {stats['seconds'] / 3600:.3f} | {per} |")
    return lines


def language_hours(run: Store, bucket: str, cache_dir: Path) -> dict[str, float]:
    """Hours per word language (ms, en, zh, particle, other) in one dataset bucket."""
    from trainer.data import first_samples

    cache_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = defaultdict(float)
    for sample in first_samples(run, f"{DATA_PREFIX}/{bucket}", 1 << 40, cache_dir):
        for word, times in zip(sample.words, sample.word_times, strict=False):
            seconds[word.get("lang", "other")] += max(0.0, float(times[1]) - float(times[0]))
    return {lang: s / 3600 for lang, s in sorted(seconds.items())}


def _evaluation_section(run: Store, phase: int, speaker: str | None) -> list[str]:
    """The figures of an evaluation summary the run stored under eval/ for this phase (speaker):
    the most specific JSON there (one naming this scope, a summary first; else one naming no
    phase, for the whole run), else a line saying there is none."""
    scope = f"phase{phase}" + (f"/{speaker}" if speaker else "")
    keys = [k for k in run.list(EVAL_PREFIX) if k.endswith(".json")]
    ranked = sorted((k for k in keys if _mentions(k, scope) or "phase" not in k),
                    key=lambda k: (not _mentions(k, scope), "summary" not in k, k))
    if not ranked:
        return [f"No evaluation figures in the store for {scope} (nothing under `{EVAL_PREFIX}/`); "
                "run `python -m trainer evaluate` and export again to include them."]
    key = ranked[0]
    try:
        figures = _flatten(run.get_json(key))
    except (ValueError, OSError) as exc:
        return [f"The evaluation summary `{key}` could not be read ({exc})."]
    if not figures:
        return [f"The evaluation summary `{key}` holds no figures."]
    return [f"From `{key}`:", "", "| measure | value |", "|---|---|",
            *[f"| {name} | {value} |" for name, value in figures]]


def _mentions(key: str, scope: str) -> bool:
    parts = key.removeprefix(f"{EVAL_PREFIX}/").replace(".json", "").replace("_", "/").replace("-", "/").split("/")
    return all(part in parts for part in scope.split("/"))


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Scalar figures of a JSON document as (dotted name, value); long lists are skipped."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _flatten(value, f"{prefix}{key}.")
    elif isinstance(obj, list) and len(obj) <= 20:
        for i, value in enumerate(obj):
            out += _flatten(value, f"{prefix}{i}.")
    elif isinstance(obj, bool | int | str) or obj is None:
        out.append((prefix.rstrip("."), json.dumps(obj) if not isinstance(obj, str) else obj))
    elif isinstance(obj, float):
        out.append((prefix.rstrip("."), f"{obj:.4g}"))
    return out
