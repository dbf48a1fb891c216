"""A blind listening test people run in a browser: MOS (1-5) and A/B preference between systems.

    python -m trainer listen --phases 2,3 [--systems reference] [--port 8765]   # serves 127.0.0.1
    python -m trainer listen-summary                                             # the statistics

A system is a phase's evaluation audio (`eval/phase<N>/audio/*.wav`, written by
`python -m trainer evaluate --phase N`) or `reference` (the decoded test references). Each rater gets
every (utterance, system) once to score and every pair of systems on each shared utterance once to
compare, in an order of their own (seeded by the rater's name), with the systems hidden: audio URLs
are opaque tokens and the A/B sides are drawn at random. Every answer is one row in SQLite:

    ratings(rater, kind 'mos'|'ab', sample, system, other, score, time)
    mos: `system` scored `score` (1-5); ab: `system` was preferred over `other` (score 1)

The summary gives each system's mean opinion score with a 95 % confidence interval (Student's t)
and, per pair, the preference counts with a two-sided sign test (binomial, p = 0.5).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import random
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from infra.settings import Settings
from infra.storage import Store
from trainer.evaluate import eval_prefix

REFERENCE = "reference"
SCHEMA = """CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rater TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mos', 'ab')),
    sample TEXT NOT NULL,
    system TEXT NOT NULL,
    other TEXT,
    score INTEGER NOT NULL,
    time REAL NOT NULL,
    trial TEXT NOT NULL,
    UNIQUE (rater, trial)
)"""


class ListeningError(ValueError):
    """The listening test cannot start or an answer is not valid; the message says why."""


# -- the material ---------------------------------------------------------------------------------
def collect(run: Store, phases: list[int], extra: list[str], speaker: str | None = None) -> dict[str, dict[str, str]]:
    """system -> {utterance id -> store key of its WAV}. Raises ListeningError naming what is missing."""
    if not phases:
        raise ListeningError("give at least one phase, e.g. --phases 2,3")
    unknown = [s for s in extra if s != REFERENCE]
    if unknown:
        raise ListeningError(f"unknown system(s) {unknown}; besides phases there is only `{REFERENCE}`")
    systems: dict[str, dict[str, str]] = {}
    for phase in phases:
        prefix = eval_prefix(phase, speaker if phase == 4 else None)
        if not run.exists(f"{prefix}/summary.json"):
            raise ListeningError(f"phase {phase} has no evaluation at {run.uri(prefix)}; run "
                                 f"`python -m trainer evaluate --phase {phase}` first")
        keys = run.list(f"{prefix}/audio")
        systems[f"phase{phase}"] = {k.rsplit("/", 1)[1].removesuffix(".wav"): k for k in keys
                                    if k.endswith(".wav") and not k.endswith(".ref.wav")}
        if REFERENCE in extra and REFERENCE not in systems:
            refs = {k.rsplit("/", 1)[1].removesuffix(".ref.wav"): k for k in keys if k.endswith(".ref.wav")}
            if refs:
                systems[REFERENCE] = refs
    if REFERENCE in extra and REFERENCE not in systems:
        raise ListeningError("no reference audio in these evaluations (test_utterances = 0?)")
    if len(systems) < 1 or not any(systems.values()):
        raise ListeningError("the evaluations hold no audio")
    return systems


@dataclass(frozen=True)
class Trial:
    id: str  # opaque
    kind: str  # "mos" | "ab"
    sample: str
    systems: tuple[str, ...]  # mos: (system,); ab: (shown as A, shown as B)


class Test:
    """The trials and the ratings database of one listening test."""

    def __init__(self, systems: dict[str, dict[str, str]], db: Path, secret: bytes | None = None):
        self.systems = systems
        self.secret = secret or secrets.token_bytes(16)
        self.db = db
        with self._connect() as conn:
            conn.execute(SCHEMA)
        self.trials: dict[str, Trial] = {}
        self.clips: dict[str, tuple[str, str]] = {}  # token -> (system, sample)
        for system, samples in sorted(systems.items()):
            for sample in sorted(samples):
                self._add(Trial(self._token("mos", system, sample), "mos", sample, (system,)))
                self.clips[self._token("clip", system, sample)] = (system, sample)
        for a, b in itertools.combinations(sorted(systems), 2):
            for sample in sorted(set(systems[a]) & set(systems[b])):
                self._add(Trial(self._token("ab", a, b, sample), "ab", sample, (a, b)))

    def _add(self, trial: Trial) -> None:
        self.trials[trial.id] = trial

    def _token(self, *parts: str) -> str:
        # Stable across restarts of the same test (ratings refer to trials by it) yet unguessable.
        return hmac.new(self.secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:20]

    def _connect(self) -> sqlite3.Connection:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(self.db, timeout=10)

    def clip_url(self, system: str, sample: str) -> str:
        return f"/audio/{self._token('clip', system, sample)}.wav"

    def order(self, rater: str) -> list[Trial]:
        """The rater's own order of every trial, and for A/B which system is A."""
        rng = random.Random(hashlib.sha256(rater.encode()).digest())
        trials = sorted(self.trials.values(), key=lambda t: t.id)
        rng.shuffle(trials)
        out = []
        for t in trials:
            if t.kind == "ab" and rng.random() < 0.5:
                t = Trial(t.id, t.kind, t.sample, (t.systems[1], t.systems[0]))
            out.append(t)
        return out

    def next_trial(self, rater: str) -> tuple[Trial | None, int, int]:
        """The rater's next unrated trial (None when done), how many they rated, and the total."""
        with self._connect() as conn:
            done = {row[0] for row in conn.execute("SELECT trial FROM ratings WHERE rater = ?", (rater,))}
        order = self.order(rater)
        pending = [t for t in order if t.id not in done]
        return (pending[0] if pending else None), len(order) - len(pending), len(order)

    def rate(self, rater: str, trial_id: str, score: int | None = None, choice: str | None = None) -> None:
        """Store one answer. Raises ListeningError for an unknown trial, a bad score or a repeat."""
        trial = self.trials.get(trial_id)
        if trial is None:
            raise ListeningError(f"unknown trial {trial_id!r}")
        if trial.kind == "mos":
            if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
                raise ListeningError(f"a MOS score is a whole number 1-5, got {score!r}")
            system, other, value = trial.systems[0], None, score
        else:
            shown = next(t for t in self.order(rater) if t.id == trial_id).systems
            if choice not in ("A", "B"):
                raise ListeningError(f"an A/B answer is 'A' or 'B', got {choice!r}")
            system, other = (shown[0], shown[1]) if choice == "A" else (shown[1], shown[0])
            value = 1
        try:
            with self._connect() as conn:
                conn.execute("INSERT INTO ratings (rater, kind, sample, system, other, score, time, trial) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (rater, trial.kind, trial.sample, system, other, value, time.time(), trial_id))
        except sqlite3.IntegrityError:
            raise ListeningError("this trial is already rated by this rater") from None


# -- statistics ------------------------------------------------------------------------------------
def mean_ci95(scores: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and its 95 % confidence interval (Student's t); no interval for fewer than 2 scores."""
    from scipy import stats

    n = len(scores)
    mean = sum(scores) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarize(db: Path) -> dict[str, Any]:
    """MOS per system with 95 % CIs; per pair of systems the A/B preferences and a sign test."""
    from scipy.stats import binomtest

    if not db.is_file():
        raise ListeningError(f"no ratings database at {db}; run `python -m trainer listen` first (or give --db)")
    with sqlite3.connect(db) as conn:
        mos_rows = conn.execute("SELECT system, score FROM ratings WHERE kind = 'mos'").fetchall()
        ab_rows = conn.execute("SELECT system, other FROM ratings WHERE kind = 'ab'").fetchall()
        raters = conn.execute("SELECT COUNT(DISTINCT rater) FROM ratings").fetchone()[0]
    mos: dict[str, Any] = {}
    for system in sorted({s for s, _ in mos_rows}):
        scores = [float(v) for s, v in mos_rows if s == system]
        mean, lo, hi = mean_ci95(scores)
        mos[system] = {"n": len(scores), "mean": mean, "ci95": None if lo is None else [lo, hi]}
    ab = []
    for a, b in sorted({tuple(sorted(pair)) for pair in ab_rows}):
        a_wins = sum(1 for s, o in ab_rows if s == a and o == b)
        b_wins = sum(1 for s, o in ab_rows if s == b and o == a)
        n = a_wins + b_wins
        p = float(binomtest(a_wins, n, 0.5).pvalue)
        ab.append({"a": a, "b": b, "n": n, "a_wins": a_wins, "b_wins": b_wins, "p_value": p,
                   "preferred": (a if a_wins > b_wins else b) if p < 0.05 else None})
    return {"raters": raters, "mos": mos, "ab": ab}


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['raters']} rater(s)", "MOS (1-5), mean and 95 % confidence interval:"]
    for system, m in summary["mos"].items():
        ci = "n/a (one score)" if m["ci95"] is None else f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"
        lines.append(f"  {system:<12} {m['mean']:.2f}  {ci}  (n={m['n']})")
    if not summary["mos"]:
        lines.append("  no scores yet")
    lines.append("A/B preference (two-sided sign test):")
    for pair in summary["ab"]:
        verdict = f"{pair['preferred']} preferred" if pair["preferred"] else "no significant preference"
        lines.append(f"  {pair['a']} vs {pair['b']}: {pair['a_wins']}-{pair['b_wins']} of {pair['n']}, "
                     f"p = {pair['p_value']:.3g}: {verdict}")
    if not summary["ab"]:
        lines.append("  no comparisons yet")
    return "\n".join(lines)


# -- the web page -----------------------------------------------------------------------------------
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Suara listening test</title>
<style>body{font-family:sans-serif;max-width:720px;margin:2em auto}button{font-size:16px;margin:4px;padding:6px 12px}
.hidden{display:none}.clip{margin:8px 0}</style></head><body>
<h1>Suara listening test</h1>
<div id="intro"><p>Headphones please. You will hear short clips: score each for naturalness (MOS 1 = bad,
5 = excellent), or say which of two clips of the same sentence sounds better. You are not told which system
made a clip.</p>
<label>Your name or initials: <input id="rater" maxlength="64"></label> <button id="start">Start</button>
<p id="intro-error"></p></div>
<div id="trial" class="hidden"><p id="progress"></p><p id="question"></p><div id="clips"></div>
<div id="mos" class="hidden">
<button id="mos-1" data-score="1" disabled>1 bad</button><button id="mos-2" data-score="2" disabled>2 poor</button>
<button id="mos-3" data-score="3" disabled>3 fair</button><button id="mos-4" data-score="4" disabled>4 good</button>
<button id="mos-5" data-score="5" disabled>5 excellent</button></div>
<div id="ab" class="hidden"><button id="choose-A" data-choice="A" disabled>A is better</button>
<button id="choose-B" data-choice="B" disabled>B is better</button></div><p id="error"></p></div>
<div id="done" class="hidden"><h2>Thank you: every clip is rated.</h2></div>
<script>
let rater = null, trial = null;
const $ = (id) => document.getElementById(id);
function enable(on) { document.querySelectorAll("#mos button, #ab button").forEach(b => b.disabled = !on); }
async function next() {
  const r = await fetch("/api/next?rater=" + encodeURIComponent(rater));
  const data = await r.json();
  if (data.done) { $("trial").classList.add("hidden"); $("done").classList.remove("hidden"); return; }
  trial = data.trial;
  $("progress").textContent = `clip ${data.rated + 1} of ${data.total}`;
  $("mos").classList.toggle("hidden", trial.kind !== "mos");
  $("ab").classList.toggle("hidden", trial.kind !== "ab");
  $("question").textContent = trial.kind === "mos" ? "How natural does this clip sound?"
                                                   : "Which clip sounds better?";
  const clips = $("clips"); clips.innerHTML = ""; enable(false);
  let loaded = 0;
  trial.audio.forEach((url, i) => {
    const div = document.createElement("div"); div.className = "clip";
    if (trial.kind === "ab") div.append(i === 0 ? "A " : "B ");
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "auto"; audio.id = "clip-" + i;
    audio.addEventListener("loadeddata", () => { loaded += 1; if (loaded === trial.audio.length) enable(true); });
    audio.src = url; div.append(audio); clips.append(div);
  });
}
async function answer(body) {
  enable(false);
  const r = await fetch("/api/rate", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(Object.assign({rater: rater, trial: trial.id}, body))});
  if (!r.ok) { $("error").textContent = (await r.json()).detail; enable(true); return; }
  $("error").textContent = ""; await next();
}
$("start").addEventListener("click", () => {
  const name = $("rater").value.trim();
  if (!name) { $("intro-error").textContent = "Please enter a name."; return; }
  rater = name; $("intro").classList.add("hidden"); $("trial").classList.remove("hidden"); next();
});
document.querySelectorAll("#mos button").forEach(b =>
  b.addEventListener("click", () => answer({score: parseInt(b.dataset.score)})));
document.querySelectorAll("#ab button").forEach(b =>
  b.addEventListener("click", () => answer({choice: b.dataset.choice})));
</script></body></html>"""


class Answer(BaseModel):
    """One answer posted by the page: a MOS score or an A/B choice for a trial."""

    rater: str
    trial: str
    score: int | None = None
    choice: str | None = None


def app(test: Test, run: Store) -> Any:
    """The FastAPI application: the page, the next trial, answers, and the (blind) audio."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    web = FastAPI(title="Suara listening test", docs_url=None, redoc_url=None, openapi_url=None)
    cache: dict[str, bytes] = {}

    def _rater(name: str) -> str:
        name = name.strip()
        if not name or len(name) > 64:
            raise HTTPException(400, "a rater name of 1-64 characters is needed")
        return name

    @web.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @web.get("/api/next")
    def next_trial(rater: str) -> dict[str, Any]:
        trial, rated, total = test.next_trial(_rater(rater))
        if trial is None:
            return {"done": True, "rated": rated, "total": total}
        return {"done": False, "rated": rated, "total": total,
                "trial": {"id": trial.id, "kind": trial.kind,
                          "audio": [test.clip_url(s, trial.sample) for s in trial.systems]}}

    @web.post("/api/rate")
    def rate(answer: Answer) -> dict[str, bool]:
        try:
            test.rate(_rater(answer.rater), answer.trial, answer.score, answer.choice)
        except ListeningError as exc:
            raise HTTPException(409 if "already" in str(exc) else 400, str(exc)) from None
        return {"ok": True}

    @web.get("/audio/{name}")
    def audio(name: str) -> Response:
        token = name.removesuffix(".wav")
        if token not in test.clips:
            raise HTTPException(404, "no such clip")
        if token not in cache:
            system, sample = test.clips[token]
            cache[token] = run.get_bytes(test.systems[system][sample])
        return Response(cache[token], media_type="audio/wav", headers={"Cache-Control": "no-store"})

    return web


def serve(settings: Settings, phases: list[int], extra: list[str], db: Path, port: int,
          speaker: str | None = None) -> None:
    """Serve the test on 127.0.0.1 until interrupted (Ctrl-C)."""
    import uvicorn

    run = Store.for_run(settings)
    systems = collect(run, phases, extra, speaker)
    # The secret that makes trial ids lives beside the ratings, so a restarted test continues.
    key = db.with_suffix(db.suffix + ".key")
    if not key.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(secrets.token_bytes(16))
    test = Test(systems, db, key.read_bytes())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    host, bound = sock.getsockname()
    print(f"listening test of {', '.join(sorted(systems))}: {len(test.trials)} trials per rater; ratings in {db}")
    print(f"open http://{host}:{bound}/ (Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app(test, run), log_level="warning"))
    server.run(sockets=[sock])
