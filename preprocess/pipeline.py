"""Preprocessing: manifest + audio in, Mimi-coded shards per phase and split out.

Every input row ends as exactly one of: a sample in the shards, or a line in `quarantine.jsonl`
with its reason. Running again rebuilds the run's data from scratch (idempotent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from infra.settings import Settings
from infra.storage import Store
from preprocess.audio import AudioError, clean, decode
from preprocess.codec import Codec
from preprocess.manifest import Rejected, Utterance, read_manifest
from preprocess.shards import DATA_PREFIX, make_sample, shard_writer, split_of
from preprocess.text import analyze, with_tags

log = logging.getLogger(__name__)
SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "data" / "sample"
QUARANTINE = "quarantine.jsonl"


@dataclass
class Report:
    samples: int
    quarantined: int
    seconds: float
    manifest_uri: str
    quarantine_uri: str


def input_store(location: str | None, settings: Settings) -> Store:
    """The folder or prefix holding the manifest and audio (default: the bundled sample corpus)."""
    if location is None:
        if not (SAMPLE_CORPUS / "manifest.jsonl").is_file():
            raise FileNotFoundError(f"bundled sample corpus missing at {SAMPLE_CORPUS}; give --input")
        return Store(f"file://{SAMPLE_CORPUS}")
    if location.startswith("s3://"):
        return Store(location, settings.s3_endpoint_url)
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"input {location} is not a folder")
    return Store(f"file://{path.resolve()}")


def run(settings: Settings, source: Store, progress: bool = True) -> Report:
    store = Store.from_settings(settings)
    run_store = store.child(settings.run_prefix)
    # A rerun rebuilds the data; checkpoints and adapters of the run are left alone.
    run_store.delete(DATA_PREFIX)
    run_store.delete(QUARANTINE)

    codec = Codec.load(settings.codec, settings.cache_dir, settings.device)
    rows = list(read_manifest(source))
    rejected: list[Rejected] = []
    seen_ids: set[str] = set()
    seen_audio: dict[str, str] = {}
    speakers: set[str] = set()
    with shard_writer(run_store) as writer:
        for row in tqdm(rows, desc="preprocess", unit="utt", disable=not progress):
            if isinstance(row, Rejected):
                rejected.append(row)
                continue
            if row.id in seen_ids:
                rejected.append(Rejected(row.id, "duplicate_id", f"id {row.id!r} appears more than once",
                                         row.audio))
                continue
            seen_ids.add(row.id)
            outcome = _process(row, source, settings, codec, seen_audio)
            if isinstance(outcome, Rejected):
                rejected.append(outcome)
                continue
            writer.write(outcome)
            speakers.add(row.speaker_id)
    stats = writer.stats

    for item in rejected:
        log.warning("quarantined %s: %s (%s)", item.id, item.reason, item.detail)
    run_store.put_text(QUARANTINE, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rejected))
    files = {key: run_store.sha256(key) for key in run_store.list(DATA_PREFIX)}
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": source.url,
        "codec": codec.describe(),
        "speakers": sorted(speakers),
        "buckets": {k: {"samples": s.samples, "seconds": round(s.seconds, 3)} for k, s in sorted(stats.items())},
        "totals": {
            "rows": len(rows),
            "samples": sum(s.samples for k, s in stats.items() if not k.startswith("phase4/")),
            "seconds": round(sum(s.seconds for k, s in stats.items() if not k.startswith("phase4/")), 3),
        },
        "quarantine": {"count": len(rejected), "by_reason": dict(Counter(r.reason for r in rejected)),
                       "file": QUARANTINE},
        "files": files,
    }
    run_store.put_json(f"{DATA_PREFIX}/manifest.json", manifest)
    return Report(
        samples=manifest["totals"]["samples"],
        quarantined=len(rejected),
        seconds=manifest["totals"]["seconds"],
        manifest_uri=run_store.uri(f"{DATA_PREFIX}/manifest.json"),
        quarantine_uri=run_store.uri(QUARANTINE),
    )


def _process(row: Utterance, source: Store, settings: Settings, codec: Codec,
             seen_audio: dict[str, str]) -> dict[str, Any] | Rejected:
    def reject(reason: str, detail: str) -> Rejected:
        return Rejected(row.id, reason, detail, row.audio)

    analysis = analyze(row.text)
    if not analysis.words:
        return reject("empty_text", f"transcript {row.text!r} has no words")
    if row.word_langs is not None or row.particle_tags is not None:
        try:
            langs = row.word_langs if row.word_langs is not None else [w.lang for w in analysis.words]
            analysis = with_tags(analysis, langs, row.particle_tags)
        except ValueError as exc:
            return reject("tags_mismatch", f"manifest tags do not fit the words: {exc}")

    try:
        data = source.get_bytes(row.audio)
    except FileNotFoundError:
        return reject("missing_audio", f"audio file {source.uri(row.audio)} does not exist")
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen_audio:
        return reject("duplicate_audio", f"same audio bytes as {seen_audio[digest]!r}")
    try:
        samples, rate = decode(data)
        audio = clean(samples, rate, settings.preprocess)
    except AudioError as exc:
        return reject(exc.reason, str(exc))
    seen_audio[digest] = row.id

    codes = codec.encode(audio)
    return make_sample(
        utt_id=row.id, speaker_id=row.speaker_id, text=row.text, analysis=analysis.to_dict(),
        split=split_of(row.id), duration_s=len(audio) / settings.preprocess.sample_rate_hz, codes=codes,
    )
