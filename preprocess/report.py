"""The data report: one HTML page with the plots a person reads at a glance.

    python -m preprocess report     # writes runs/<run_id>/report.html and links it from the manifest

Durations, hours per speaker and per phase, language mix, particle counts, F0 per speaker, the mean
F0 contour of each particle beside the shape the planning document expects, and the quarantine.
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
from preprocess.pipeline import QUARANTINE
from preprocess.shards import DATA_PREFIX, ShardSample, read_data_manifest

REPORT = "report.html"
CONTOUR_POINTS = 10
# The seed's particle prosody table, as normalised pitch shapes over the particle (0 = start).
EXPECTED_SHAPES = {
    "lah": ("rise then fall", [0.0, 0.5, 1.0, 0.6, 0.1]),
    "leh": ("rising", [0.0, 0.25, 0.5, 0.75, 1.0]),
    "lor": ("flat / falling", [0.5, 0.45, 0.4, 0.3, 0.2]),
    "meh": ("high rising", [0.3, 0.5, 0.7, 0.9, 1.0]),
    "mah": ("quick fall", [1.0, 0.4, 0.1, 0.0, 0.0]),
    "loh": ("falling", [1.0, 0.75, 0.5, 0.25, 0.0]),
}


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


def build_report(run: Store, cache_dir: Path) -> str:
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
    shown = [p for p in EXPECTED_SHAPES if p in contours] + [p for p in contours if p not in EXPECTED_SHAPES]
    if shown:
        cols = min(4, len(shown))
        rows = int(np.ceil(len(shown) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
        for ax, p in zip(axes.flat, shown, strict=False):
            ax.plot(np.linspace(0, 1, CONTOUR_POINTS), contours[p], "o-", label="measured (semitones)")
            if p in EXPECTED_SHAPES:
                label, shape = EXPECTED_SHAPES[p]
                span = max(np.ptp(contours[p]), 1.0)
                expected = np.array(shape) * span + contours[p].min()
                ax.plot(np.linspace(0, 1, len(shape)), expected, "--", color="gray", label=f"expected: {label}")
            ax.set_title(p)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        fig.tight_layout()
        figures.append(("Mean F0 contour of each particle vs the expected shape", _png(fig)))

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
<h2>Quarantine</h2><table><tr><th>id</th><th>reason</th><th>detail</th></tr>{rows_html}</table>
</body></html>"""
    run.put_text(REPORT, page)
    manifest["report"] = REPORT
    run.put_json(f"{DATA_PREFIX}/manifest.json", manifest)
    return run.uri(REPORT)
