"""The data report: one HTML page with the plots a person reads at a glance.

    python -m preprocess report     # writes runs/<run_id>/report.html and links it from the manifest

Durations, hours per speaker and per phase, language mix, particle counts, F0 per speaker, the mean
F0 contour of each particle beside the shape the planning document expects, each particle's
agreement with that table (preprocess/prosody.py classifies every occurrence in the audio the codes
decode to), and the quarantine.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from infra.storage import Store
from preprocess import prosody
from preprocess.pipeline import QUARANTINE
from preprocess.shards import DATA_PREFIX, ShardSample, read_data_manifest

REPORT = "report.html"
CONTOUR_POINTS = 10


def _samples(run: Store, manifest: dict[str, Any], cache: Path) -> list[ShardSample]:
    from streaming import StreamingDataset

    out = []
    for key in manifest["buckets"]:
        if key.startswith("phase4/"):
            continue  # the same utterances again, per speaker
        with run.library_env():
            ds = StreamingDataset(remote=run.uri(f"{DATA_PREFIX}/{key}"), local=str(cache / key), batch_size=1)
            out += [ShardSample.from_columns(ds[i]) for i in range(len(ds))]
    return out


def particle_contours(samples: list[ShardSample], f0_mean: dict[str, float]) -> dict[str, np.ndarray]:
    """Mean F0 contour (semitones from the speaker's mean) of each particle, CONTOUR_POINTS long."""
    contours: dict[str, list[np.ndarray]] = defaultdict(list)
    for s in samples:
        f0 = np.asarray(s.f0_hz, dtype=np.float64)
        for word, (start, end) in zip(s.words, s.word_times, strict=True):
            if word.get("lang") != "particle" or not word.get("particle"):
                continue
            frames = f0[int(start * 12.5) : int(np.ceil(end * 12.5))]
            voiced = frames[frames > 0]
            if voiced.size < 2 or s.speaker_id not in f0_mean:
                continue
            semitones = 12 * np.log2(voiced / f0_mean[s.speaker_id])
            grid = np.linspace(0, 1, CONTOUR_POINTS)
            contours[word["particle"]].append(np.interp(grid, np.linspace(0, 1, voiced.size), semitones))
    return {p: np.mean(c, axis=0) for p, c in contours.items()}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def particle_checks(samples: list[ShardSample], codec: Any, f0_mean: dict[str, float],
                    table: prosody.ParticleTable) -> list[dict[str, Any]]:
    """Every particle occurrence classified in the audio its codes decode to (what the model learns
    from), against the table."""
    rows = []
    for s in samples:
        if not any(w.get("lang") == "particle" and w.get("particle") for w in s.words):
            continue
        audio = codec.decode(s.codes)
        times = [(float(a), float(b)) for a, b in s.word_times]
        rows += [{**row, "id": s.id} for row in prosody.check_particles(audio, codec.sample_rate_hz, s.words, times,
                                                                        f0_mean.get(s.speaker_id), table)]
    return rows


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def particle_table_html(summary: dict[str, dict[str, Any]]) -> str:
    """One row per particle: occurrences, measured shapes, expected shape and length, agreement."""
    if not summary:
        return "<p>no particles</p>"
    head = ("<tr><th>particle</th><th>n</th><th>measured shapes</th><th>expected shape</th><th>shape agrees</th>"
            "<th>median length (x syllable)</th><th>expected length</th><th>length agrees</th></tr>")
    rows = []
    for particle, e in summary.items():
        shapes = ", ".join(f"{k} {v}" for k, v in sorted(e["shapes"].items(), key=lambda kv: -kv[1]))
        expected = " or ".join(e["expected_shape"]) or "—"
        length = "—" if e["expected_duration"] is None else f"{e['expected_duration'][0]}-{e['expected_duration'][1]}"
        ratio = "—" if e["median_duration_ratio"] is None else f"{e['median_duration_ratio']:.2f}"
        rows.append(f"<tr><td>{html.escape(particle)}</td><td>{e['count']}</td><td>{html.escape(shapes)}</td>"
                    f"<td>{html.escape(expected)}</td><td>{_fraction(e['shape_agreement'])}</td><td>{ratio}</td>"
                    f"<td>{length}</td><td>{_fraction(e['duration_agreement'])}</td></tr>")
    return f"<table class='particles'>{head}{''.join(rows)}</table>"


def build_report(run: Store, cache_dir: Path, shapes: Path | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest = read_data_manifest(run)
    cache = Path(tempfile.mkdtemp(prefix="report-", dir=cache_dir))
    try:
        samples = _samples(run, manifest, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    figures: list[tuple[str, str]] = []

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([s.duration_s for s in samples], bins=30, color="#4477aa")
    ax.set(xlabel="seconds", ylabel="utterances", title="Utterance durations")
    figures.append(("Durations", _png(fig)))

    hours_spk: Counter = Counter()
    hours_phase: Counter = Counter()
    for s in samples:
        hours_spk[s.speaker_id] += s.duration_s / 3600
        hours_phase[f"phase {s.phase}"] += s.duration_s / 3600
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].bar(list(hours_spk), [v * 60 for v in hours_spk.values()], color="#66aa55")
    axes[0].set(ylabel="minutes", title="Audio per speaker")
    axes[1].bar(sorted(hours_phase), [hours_phase[k] * 60 for k in sorted(hours_phase)], color="#cc6677")
    axes[1].set(ylabel="minutes", title="Audio per phase")
    figures.append(("Hours per speaker and phase", _png(fig)))

    langs = Counter(w["lang"] for s in samples for w in s.words)
    particles = Counter(w["particle"] for s in samples for w in s.words if w.get("particle"))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].bar(list(langs), list(langs.values()), color="#ddaa33")
    axes[0].set(ylabel="words", title="Language mix (words)")
    ranked = particles.most_common()
    axes[1].bar([p for p, _ in ranked], [n for _, n in ranked], color="#aa4499")
    axes[1].set(ylabel="occurrences", title="Particles")
    axes[1].tick_params(axis="x", labelrotation=45)
    figures.append(("Language mix and particle coverage", _png(fig)))

    f0_by_speaker: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        f0 = np.asarray(s.f0_hz)
        f0_by_speaker[s.speaker_id] += f0[f0 > 0].tolist()
    fig, ax = plt.subplots(figsize=(6, 3))
    for spk, values in sorted(f0_by_speaker.items()):
        ax.hist(values, bins=40, alpha=0.6, label=spk)
    ax.set(xlabel="F0 (Hz)", ylabel="voiced frames", title="F0 per speaker")
    ax.legend()
    figures.append(("F0 per speaker", _png(fig)))

    means = {spk: float(np.mean(v)) for spk, v in f0_by_speaker.items() if v}
    contours = particle_contours(samples, means)
    table = prosody.load_table(shapes)
    expected = {p: e.shapes for p, e in table.particles.items() if e.shapes}
    shown = [p for p in expected if p in contours] + [p for p in contours if p not in expected]
    if shown:
        cols = min(4, len(shown))
        rows = int(np.ceil(len(shown) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
        for ax, p in zip(axes.flat, shown, strict=False):
            ax.plot(np.linspace(0, 1, CONTOUR_POINTS), contours[p], "o-", label="measured (semitones)")
            for shape in expected.get(p, ()):
                typical = prosody.prototype(shape, settings=table.classifier)
                ax.plot(np.linspace(0, 1, len(typical)), typical, "--", label=f"expected: {shape}")
            ax.set_title(p)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        fig.tight_layout()
        figures.append(("Mean F0 contour of each particle vs the expected shape", _png(fig)))

    from preprocess.codec import Codec

    codec = Codec.load(manifest["codec"]["name"], cache_dir)
    checks = particle_checks(samples, codec, means, table)
    particles_html = particle_table_html(prosody.summarize(checks))

    quarantine = [json.loads(line) for line in run.get_bytes(QUARANTINE).decode().splitlines() if line.strip()] \
        if run.exists(QUARANTINE) else []
    rows_html = "".join(
        f"<tr><td>{html.escape(q['id'])}</td><td>{html.escape(q['reason'])}</td>"
        f"<td>{html.escape(q.get('detail', ''))}</td></tr>" for q in quarantine
    ) or "<tr><td colspan=3>nothing quarantined</td></tr>"
    totals = manifest["totals"]
    body = "".join(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>" for title, png in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Suara data report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Suara data report</h1>
<p>{totals['samples']} utterances, {totals['seconds'] / 60:.1f} minutes of audio, {len(manifest['speakers'])}
speakers, {manifest['quarantine']['count']} quarantined. Codec: {html.escape(manifest['codec']['name'])}
({manifest['codec']['num_codebooks']} codebooks at {manifest['codec']['frame_rate_hz']} frames/s).</p>
{body}
<h2>Particle prosody against the expected table</h2>
<p>Each particle occurrence's pitch contour, classified in the audio its codes decode to, against
{html.escape(table.source)}; lengths are relative to the speaker's mean syllable in the same utterance.</p>
{particles_html}
<h2>Quarantine</h2><table><tr><th>id</th><th>reason</th><th>detail</th></tr>{rows_html}</table>
</body></html>"""
    run.put_text(REPORT, page)
    manifest["report"] = REPORT
    run.put_json(f"{DATA_PREFIX}/manifest.json", manifest)
    return run.uri(REPORT)
