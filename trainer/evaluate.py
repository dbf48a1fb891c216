"""Evaluation of a phase: what people read to decide whether to continue, adjust or stop.

    python -m trainer evaluate --phase 3 [--speaker S]

The phase's published adapter speaks (1) the fixed prompts of each category (trainer/eval_prompts.yaml
or `evaluation.prompts`: Malay, English, code-switched, each particle) and (2) held-out test
utterances of each category with their own speaker. Each test utterance is compared with its
reference, the audio its codes decode to with the model's own Mimi (what the model can at best
reproduce): MCD, F0 RMSE, voicing error, duration ratio, word-duration MAE (the espeak-ng aligner
on the generated audio against the reference's word timings) and CER when an ASR model is set.
Every particle, in prompts and test utterances, is aligned and classified (preprocess/prosody.py)
against the expected shape table.

Written under `runs/<run_id>/eval/phase<N>[/<speaker>]/` in the store:
    summary.json    metrics per category, particle agreement, one row per utterance (for tools)
    report.html     metric tables, phase-over-phase plots, each particle's F0 contour against its
                    expected shape, and an audio player per utterance (audio embedded)
    audio/<id>.wav  the generated clips (the listening test plays them); audio/<id>.ref.wav references
The same figures and scalars go to W&B (an `eval/phase<N>` run).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.settings import Settings
from infra.storage import Store
from preprocess import metrics, prosody
from preprocess.shards import ShardSample, dataset_prefix, read_data_manifest

log = logging.getLogger(__name__)
DEFAULT_PROMPTS = Path(__file__).with_name("eval_prompts.yaml")
METRICS = ("mcd_db", "f0_rmse_hz", "f0_rmse_cents", "voicing_error", "duration_ratio", "word_duration_mae_ms", "cer")
LABELS = {"mcd_db": "MCD (dB)", "f0_rmse_hz": "F0 RMSE (Hz)", "f0_rmse_cents": "F0 RMSE (cents)",
          "voicing_error": "voicing error", "duration_ratio": "duration ratio",
          "word_duration_mae_ms": "word-duration MAE (ms)", "cer": "CER"}
# The planning document's expected metrics after its last training stage (section 10.2).
TARGETS = {"mcd_db": (5.5, 6.5), "f0_rmse_hz": (15.0, 25.0), "word_duration_mae_ms": (30.0, 50.0)}
LANGUAGE_CATEGORY = {"ms": "malay", "en": "english", "zh": "mandarin"}


def eval_prefix(phase: int, speaker: str | None = None) -> str:
    return f"eval/phase{phase}" + (f"/{speaker}" if speaker else "")


def load_prompts(path: Path | None = None) -> dict[str, list[str]]:
    """Category -> prompts from the YAML file. Raises ValueError naming the file and the entry."""
    import yaml

    source = path or DEFAULT_PROMPTS
    try:
        raw = yaml.safe_load(Path(source).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"evaluation prompts {source}: {exc}") from None
    prompts = {}
    for category, texts in raw.items():
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{source}: category {category!r} must be a list of non-empty sentences")
        prompts[str(category)] = texts
    if not prompts:
        raise ValueError(f"{source} has no prompts")
    return prompts


@dataclass
class Item:
    """One utterance to synthesise: a fixed prompt, or a test utterance with its reference."""

    id: str
    category: str
    text: str
    speaker: str
    words: list[dict[str, Any]]
    reference: ShardSample | None = None
    result: dict[str, Any] = field(default_factory=dict)


def category_of(sample: ShardSample) -> str:
    if sample.phase == 2:
        return "code_switched"
    if sample.phase == 3:
        return "particle"
    langs = [w["lang"] for w in sample.words if w["lang"] in LANGUAGE_CATEGORY]
    return LANGUAGE_CATEGORY[max(set(langs), key=langs.count)] if langs else "other"


def test_items(run: Store, settings: Settings, phase: int, speaker: str | None) -> list[Item]:
    """Up to `evaluation.test_utterances` held-out test utterances per category (of `speaker`,
    when given; phase 4: that speaker's test split)."""
    from trainer.data import first_samples

    per_category = settings.evaluation.test_utterances
    if per_category == 0:
        return []
    manifest = read_data_manifest(run)
    prefixes = [dataset_prefix(4, "test", speaker)] if phase == 4 else \
        [dataset_prefix(p, "test") for p in (1, 2, 3) if f"phase{p}/test" in manifest["buckets"]]
    cache = settings.cache_dir / "streaming"
    cache.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    counts: dict[str, int] = {}
    for prefix in prefixes:
        for sample in first_samples(run, prefix, 10_000, cache):
            category = category_of(sample)
            if (speaker and sample.speaker_id != speaker) or counts.get(category, 0) >= per_category:
                continue
            counts[category] = counts.get(category, 0) + 1
            items.append(Item(f"test_{sample.id}", category, sample.text, sample.speaker_id, sample.words, sample))
    return items


def prompt_items(prompts: dict[str, list[str]], speaker: str) -> list[Item]:
    from preprocess.text import analyze

    items = []
    for category, texts in prompts.items():
        for j, text in enumerate(texts):
            words = [w.to_dict() for w in analyze(text).words]
            items.append(Item(f"prompt_{category}_{j:02d}", category, text, speaker, words))
    return items


class Evaluator:
    """Synthesises the items with one phase's adapter and measures them."""

    def __init__(self, settings: Settings, phase: int, speaker: str | None = None, progress: bool = True):
        if phase not in (1, 2, 3, 4):
            raise ValueError(f"phase must be 1, 2, 3 or 4, got {phase}")
        if phase == 4 and speaker is None:
            raise ValueError("phase 4 has one adapter per speaker: give --speaker")
        self.settings = settings
        self.phase = phase
        self.speaker = speaker
        self.progress = progress
        self.run = Store.for_run(settings)
        self.prefix = eval_prefix(phase, speaker if phase == 4 else None)
        self.table = prosody.load_table(settings.evaluation.particle_shapes)
        self.prompts = load_prompts(settings.evaluation.prompts)

    # -- the model ---------------------------------------------------------------------------
    def load(self) -> None:
        from trainer.checkpoint import fetch_adapter
        from trainer.model import load_for_inference

        with tempfile.TemporaryDirectory(prefix="suara-eval-") as tmp:
            manifest = fetch_adapter(self.run, self.phase, self.speaker if self.phase == 4 else None, Path(tmp))
            self.model, self.tokenizer = load_for_inference(self.settings, Path(tmp), manifest.get("mode", "lora"))
        self.adapter = manifest
        self.speakers: dict[str, int] = manifest.get("speakers", {})
        if self.speaker is not None and self.speaker not in self.speakers:
            raise ValueError(f"unknown speaker {self.speaker!r}; this adapter knows {sorted(self.speakers)}")
        self.rate = int(self.model.codec_model.config.sampling_rate)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            c = torch.as_tensor(np.asarray(codes, dtype=np.int64).T[None], device=self.model.device)
            return self.model.codec_model.decode(c).audio_values[0, 0].float().cpu().numpy()

    def speak(self, item: Item) -> np.ndarray:
        from trainer.synth import generate

        return generate(self.model, self.tokenizer, item.text, self.speakers[item.speaker],
                        self.settings.evaluation.max_seconds, self.settings.seed)

    # -- measuring ---------------------------------------------------------------------------
    def measure(self, item: Item, audio: np.ndarray, reference: np.ndarray | None,
                transcriber: metrics.Transcriber | None) -> dict[str, Any]:
        from preprocess import align

        out: dict[str, Any] = {"id": item.id, "category": item.category, "text": item.text, "speaker": item.speaker,
                               "seconds": len(audio) / self.rate, "kind": "test" if reference is not None else "prompt"}
        if len(audio) < int(0.1 * self.rate) or not np.any(audio):
            out["error"] = "no audio generated"
            return out
        words = [(w["text"], w["lang"]) for w in item.words]
        times = None
        if words and align.available():
            times = [(t.start_s, t.end_s) for t in align.align(audio, self.rate, words)]
        if reference is not None:
            comparison = metrics.compare_audio(reference, audio, self.rate).to_dict()
            out.update(comparison)
            if times is not None and item.reference is not None and len(item.reference.word_times) == len(times):
                ref_times = [(float(a), float(b)) for a, b in item.reference.word_times]
                out["word_duration_mae_ms"] = metrics.word_duration_mae_ms(ref_times, times)
            out["reference_particles"] = prosody.check_particles(
                reference, self.rate, item.words, [(float(a), float(b)) for a, b in item.reference.word_times],
                None, self.table) if item.reference is not None else []
        if transcriber is not None:
            out["transcript"] = transcriber(audio, self.rate)
            out["cer"] = metrics.cer(item.text, out["transcript"])
        out["particles"] = prosody.check_particles(audio, self.rate, item.words, times, None, self.table) \
            if times is not None else []
        return out

    def evaluate(self) -> dict[str, Any]:
        """Synthesise, measure, write summary, audio and report to the store; the summary."""
        from tqdm import tqdm

        started = time.time()
        self.load()
        voice = self.speaker or sorted(self.speakers, key=self.speakers.get)[0]
        items = prompt_items(self.prompts, voice) + test_items(self.run, self.settings, self.phase, self.speaker)
        transcriber = metrics.Transcriber(self.settings.evaluation.asr_model) \
            if self.settings.evaluation.asr_model else None
        rows, clips = [], {}
        for item in tqdm(items, desc=f"evaluating {self.prefix}", disable=not self.progress):
            if item.speaker not in self.speakers:
                log.warning("%s: speaker %s is not in the adapter; skipped", item.id, item.speaker)
                continue
            audio = self.speak(item)
            reference = self.decode(item.reference.codes) if item.reference is not None else None
            rows.append(self.measure(item, audio, reference, transcriber))
            clips[item.id] = (audio, reference)
        summary = self.summarize(rows, time.time() - started)
        self.write(summary, clips)
        return summary

    def summarize(self, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        categories: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = categories.setdefault(row["category"], {"utterances": 0, "tested": 0, "failed": 0})
            entry["utterances"] += 1
            entry["failed"] += "error" in row
            entry["tested"] += row["kind"] == "test" and "error" not in row
        for category, entry in categories.items():
            for name in METRICS:
                values = [r[name] for r in rows if r["category"] == category and r.get(name) is not None]
                if values:
                    entry[name] = float(np.mean(values))
        generated = [p for r in rows for p in r.get("particles", [])]
        references = [p for r in rows for p in r.get("reference_particles", [])]
        overall = {name: float(np.mean(v)) for name in METRICS
                   if (v := [r[name] for r in rows if r.get(name) is not None])}
        return {
            "run_id": self.settings.run_id, "phase": self.phase, "speaker": self.speaker,
            "adapter_steps": self.adapter.get("steps"), "model": self.settings.model,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 1),
            "sample_rate_hz": self.rate, "shape_table": self.table.source,
            "asr_model": self.settings.evaluation.asr_model,
            "overall": overall, "categories": categories,
            "particles": prosody.summarize(generated), "reference_particles": prosody.summarize(references),
            "utterances": rows,
        }

    # -- writing -------------------------------------------------------------------------------
    def write(self, summary: dict[str, Any], clips: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
        import soundfile as sf

        self.run.delete(self.prefix)  # a re-run replaces the phase's evaluation, never mixes two
        with tempfile.TemporaryDirectory(prefix="suara-eval-audio-") as tmp:
            for item_id, (audio, reference) in clips.items():
                for suffix, samples in ((".wav", audio), (".ref.wav", reference)):
                    if samples is None or len(samples) == 0:
                        continue
                    path = Path(tmp) / f"{item_id}{suffix}"
                    sf.write(path, samples, self.rate, subtype="PCM_16")
                    self.run.put_file(path, f"{self.prefix}/audio/{item_id}{suffix}")
        history = phase_history(self.run, self.speaker if self.phase == 4 else None, summary)
        figures = report_figures(summary, history, self.table)
        page = report_html(summary, history, figures, clips, self.rate)
        self.run.put_text(f"{self.prefix}/report.html", page)
        self.run.put_json(f"{self.prefix}/summary.json", summary)  # last: its presence says "complete"
        self._to_wandb(summary, figures)

    def _to_wandb(self, summary: dict[str, Any], figures: dict[str, Any]) -> None:
        from trainer.logger import RunLogger

        logger = RunLogger(self.settings, self.prefix, None)
        try:
            step = int(summary.get("adapter_steps") or 0)
            scalars = {f"eval/{cat}/{name}": value for cat, entry in summary["categories"].items()
                       for name, value in entry.items() if name in METRICS}
            scalars.update({f"eval/particle/{p}/shape_agreement": e["shape_agreement"]
                            for p, e in summary["particles"].items() if e["shape_agreement"] is not None})
            logger.log(step, scalars)
            logger.log_figures(step, {f"eval/{name}": fig for name, fig in figures.items()})
        finally:
            logger.close()
            import matplotlib.pyplot as plt

            for fig in figures.values():
                plt.close(fig)


def phase_history(run: Store, speaker: str | None, current: dict[str, Any]) -> list[dict[str, Any]]:
    """Every phase's summary of this run (this speaker's for phase 4), this one included, in order."""
    out = []
    for phase in (1, 2, 3, 4):
        if phase == current["phase"]:
            out.append(current)
            continue
        key = f"{eval_prefix(phase, speaker if phase == 4 else None)}/summary.json"
        if run.exists(key):
            out.append(run.get_json(key))
    return out


def report_figures(summary: dict[str, Any], history: list[dict[str, Any]],
                   table: prosody.ParticleTable) -> dict[str, Any]:
    """The report's figures (matplotlib): per-category metrics, phase over phase, particle contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    shown = [m for m in ("mcd_db", "f0_rmse_hz", "word_duration_mae_ms", "voicing_error") if
             any(m in e for e in summary["categories"].values())]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3), squeeze=False)
        for ax, name in zip(axes[0], shown, strict=True):
            cats = [c for c, e in summary["categories"].items() if name in e]
            ax.bar(cats, [summary["categories"][c][name] for c in cats], color="#4477aa")
            if name in TARGETS:
                ax.axhspan(*TARGETS[name], color="#66aa55", alpha=0.25, label="planning target")
                ax.legend(fontsize=7)
            ax.set_title(LABELS[name], fontsize=9)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.tight_layout()
        figures["metrics_per_category"] = fig

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, name in zip(axes, ("mcd_db", "f0_rmse_hz", "word_duration_mae_ms"), strict=True):
        phases = [h["phase"] for h in history]
        categories = sorted({c for h in history for c, e in h["categories"].items() if name in e})
        for category in categories:
            values = [h["categories"].get(category, {}).get(name, np.nan) for h in history]
            ax.plot(phases, values, "o-", label=category)
        if name in TARGETS:
            ax.axhspan(*TARGETS[name], color="#66aa55", alpha=0.25)
        ax.set(title=LABELS[name], xlabel="phase", xticks=[1, 2, 3, 4])
        if categories:
            ax.legend(fontsize=6)
    fig.tight_layout()
    figures["phase_over_phase"] = fig

    rows = [p for u in summary["utterances"] for p in u.get("particles", [])]
    particles = sorted({r["particle"] for r in rows})
    if particles:
        cols = min(4, len(particles))
        nrows = int(np.ceil(len(particles) / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.5 * nrows), squeeze=False)
        for ax, particle in zip(axes.flat, particles, strict=False):
            for r in (r for r in rows if r["particle"] == particle):
                f0 = np.asarray(r["f0_hz"], dtype=np.float64)
                if f0.size and np.any(f0 > 0) and r["speaker_f0_hz"] > 0:
                    st = np.where(f0 > 0, 12 * np.log2(np.maximum(f0, 1e-9) / r["speaker_f0_hz"]), np.nan)
                    ax.plot(np.linspace(0, 1, f0.size), st, alpha=0.6,
                            label=f"measured: {r['shape']}")
            for shape in table.expected(particle).shapes:
                ax.plot(np.linspace(0, 1, 50), prosody.prototype(shape, settings=table.classifier), "k--",
                        label=f"expected: {shape}")
            ax.set_title(particle, fontsize=9)
            ax.set_ylabel("semitones", fontsize=7)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(particles):]:
            ax.axis("off")
        fig.tight_layout()
        figures["particle_contours"] = fig
    return figures


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _wav_uri(samples: np.ndarray, rate: int) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def _player(samples: np.ndarray, rate: int) -> str:
    return f"<audio controls preload='none' src='{_wav_uri(samples, rate)}'></audio>"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))


def report_html(summary: dict[str, Any], history: list[dict[str, Any]], figures: dict[str, Any],
                clips: dict[str, tuple[np.ndarray, np.ndarray | None]], rate: int) -> str:
    from preprocess.report import particle_table_html

    head = "".join(f"<th>{LABELS[m]}</th>" for m in METRICS)
    metric_rows = "".join(
        f"<tr><td>{html.escape(cat)}</td><td>{e['utterances']}</td><td>{e['tested']}</td><td>{e['failed']}</td>"
        + "".join(f"<td>{_fmt(e.get(m))}</td>" for m in METRICS) + "</tr>"
        for cat, e in summary["categories"].items())
    targets = "".join(f"<td>{TARGETS[m][0]:g}-{TARGETS[m][1]:g}</td>" if m in TARGETS else "<td></td>" for m in METRICS)
    history_rows = "".join(
        f"<tr><td>{h['phase']}</td><td>{_fmt(h.get('adapter_steps'))}</td>"
        + "".join(f"<td>{_fmt(h.get('overall', {}).get(m))}</td>" for m in METRICS) + "</tr>" for h in history)
    players = []
    for row in summary["utterances"]:
        audio, reference = clips.get(row["id"], (None, None))
        gen = _player(audio, rate) if audio is not None and len(audio) else "no audio"
        ref = _player(reference, rate) if reference is not None else ""
        marks = {True: " ✓", False: " ✗", None: ""}
        shapes = ", ".join(f"{p['particle']}: {p['shape']}{marks[p['shape_ok']]}" for p in row.get("particles", []))
        players.append(f"<tr><td>{html.escape(row['id'])}</td><td>{html.escape(row['category'])}</td>"
                       f"<td>{html.escape(row['text'])}</td><td>{gen}</td><td>{ref}</td>"
                       f"<td>{_fmt(row.get('mcd_db'))}</td><td>{html.escape(shapes or row.get('error', ''))}</td></tr>")
    images = "".join(f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{name}' "
                     f"src='data:image/png;base64,{_png(fig)}'>" for name, fig in figures.items())
    title = f"Suara evaluation: run {summary['run_id']}, phase {summary['phase']}" + \
        (f", speaker {summary['speaker']}" if summary.get("speaker") else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:3px;
font-size:13px}}table{{border-collapse:collapse;margin-bottom:1em}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Adapter after {_fmt(summary.get('adapter_steps'))} steps of model {html.escape(str(summary['model']))};
{len(summary['utterances'])} utterances ({sum(u['kind'] == 'test' for u in summary['utterances'])} held-out test
utterances compared with their references, the rest fixed prompts); evaluated {html.escape(summary['created'])}
in {summary['seconds']} s. Machine-readable: <code>summary.json</code> beside this page.</p>
<h2>Metrics per category</h2>
<table><tr><th>category</th><th>utterances</th><th>tested</th><th>failed</th>{head}</tr>{metric_rows}
<tr><td>planning target</td><td></td><td></td><td></td>{targets}</tr></table>
<h2>Phase over phase (all categories)</h2>
<table><tr><th>phase</th><th>steps</th>{head}</tr>{history_rows}</table>
<h2>Particle prosody (generated speech)</h2>
{particle_table_html(summary['particles'])}
<h2>Particle prosody (references)</h2>
{particle_table_html(summary['reference_particles'])}
<h2>Figures</h2>
{images}
<h2>Listen</h2>
<table><tr><th>id</th><th>category</th><th>text</th><th>generated</th><th>reference</th><th>MCD</th>
<th>particles (expected ✓/✗) or error</th></tr>{''.join(players)}</table>
</body></html>"""


def evaluate(settings: Settings, phase: int, speaker: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a phase's published adapter; the summary (also at eval/phase<N>/summary.json)."""
    return Evaluator(settings, phase, speaker, progress).evaluate()


def validation_mcd(model: Any, tokenizer: Any, samples: list[ShardSample], speaker_index: dict[str, int],
                   max_seconds: float, seed: int) -> float | None:
    """Mean MCD of the model's speech for validation clips against their decoded references (the
    checkpoint score when train.best_metric is mcd); None if nothing could be measured."""
    from trainer.loss import csm_parts
    from trainer.synth import generate

    csm = csm_parts(model)
    rate = int(csm.codec_model.config.sampling_rate)
    values = []
    import torch

    for sample in samples:
        audio = generate(csm, tokenizer, sample.text, speaker_index[sample.speaker_id], max_seconds, seed)
        if len(audio) < int(0.1 * rate) or not np.any(audio):
            continue
        with torch.inference_mode():
            codes = torch.as_tensor(np.asarray(sample.codes, dtype=np.int64).T[None], device=csm.device)
            reference = csm.codec_model.decode(codes).audio_values[0, 0].float().cpu().numpy()
        values.append(metrics.compare_audio(reference, audio, rate).mcd_db)
    return float(np.mean(values)) if values else None

