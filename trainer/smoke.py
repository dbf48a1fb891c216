"""The smoke run: every moving part of a cloud setup, end to end, for cents.

    python -m trainer smoke --steps 8            # what sky/smoke.yaml runs on the cheapest GPU
    python -m trainer smoke --local-s3           # the same here, against a local S3 endpoint

1. uploads the bundled sample corpus to the store (the credentials can write the bucket);
2. preprocesses it there (codec on the device, shards written to and read from the store);
3. trains phase 1 of the model for a few steps in a child process, and preempts it the way a spot
   cloud does (SIGTERM once it logged half the steps): it must checkpoint and exit 75;
4. runs the same command again: it must resume from that checkpoint and finish (exit 0);
5. pulls the adapter and verifies every checksum; reads the ledger's spend in dollars.

Each step prints what it proved; any failure exits non-zero with the step that failed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.settings import Settings
from infra.storage import Store
from trainer import exit_codes

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


class SmokeFailed(RuntimeError):
    pass


def upload_corpus(settings: Settings, source: Path = SAMPLE) -> Store:
    target = Store.for_run(settings).child("smoke-input")
    files = [p for p in sorted(source.rglob("*")) if p.is_file()]
    for path in files:
        target.put_file(path, str(path.relative_to(source)))
    print(f"PROVED store write: {len(files)} files of the sample corpus uploaded to {target.url}", flush=True)
    return target


def train_attempt(env: dict[str, str], steps: int, preempt_at: int | None) -> tuple[int, str]:
    """One `python -m trainer train --phase 1` child; SIGTERM once it logs step `preempt_at`."""
    cmd = [sys.executable, "-m", "trainer", "train", "--phase", "1", "--max-steps", str(steps),
           "--checkpoint-every", str(max(1, steps // 4)), "--no-progress"]
    lines: list[str] = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write("    | " + line)
            found = re.search(r"phase1 step (\d+)/", line)
            if preempt_at is not None and found and int(found.group(1)) >= preempt_at:
                proc.send_signal(signal.SIGTERM)
                preempt_at = None
    return proc.returncode, "".join(lines)


def run_smoke(settings: Settings, steps: int = 8, environ: dict[str, str] | None = None) -> int:
    from infra.ledger import entries
    from infra.models import resolve_device
    from preprocess.pipeline import input_store, run
    from trainer.checkpoint import fetch_adapter

    env = dict(os.environ if environ is None else environ)
    env.update({"SUARA_RUN_ID": settings.run_id, "SUARA_TRAIN__LOG_EVERY": "1", "PYTHONUNBUFFERED": "1"})
    corpus = upload_corpus(settings)
    report = run(settings, input_store(corpus.uri(), settings), progress=False)
    print(f"PROVED preprocessing on {resolve_device(settings.device).type}: {report.samples} utterances into shards at "
          f"{report.manifest_uri} ({report.quarantined} quarantined)", flush=True)

    half = max(1, steps // 2)
    code, log = train_attempt(env, steps, preempt_at=half)
    if code != exit_codes.PREEMPTED:
        raise SmokeFailed(f"the preempted attempt exited {code}, not {exit_codes.PREEMPTED}")
    saved = re.findall(r"checkpoint \S+step_(\d+)", log)
    if not saved:
        raise SmokeFailed("the preempted attempt exited without logging a checkpoint")
    print(f"PROVED preemption: SIGTERM at step {half} gave a checkpoint (step {int(saved[-1])}) "
          f"and exit {code}, which the task files retry", flush=True)

    # The resume runs on the same instance: it pays from its own start, with no provisioning (the
    # first attempt counted the task's start-up from its first command).
    resumed_env = {k: v for k, v in env.items() if k != "SUARA_BUDGET__TASK_STARTED_AT"}
    code, log = train_attempt({**resumed_env, "SUARA_BUDGET__PROVISION_SECONDS_ESTIMATE": "0"}, steps,
                              preempt_at=None)
    resumed = re.search(r"resumed phase1 from step (\d+)", log)
    if code != 0 or resumed is None:
        raise SmokeFailed(f"the resumed attempt exited {code} (resumed: {bool(resumed)})")
    print(f"PROVED resume: the next attempt continued from step {resumed.group(1)} and finished {steps} steps",
          flush=True)

    run_store = Store.for_run(settings)
    with tempfile.TemporaryDirectory(prefix="suara-smoke-pull-") as tmp:
        manifest = fetch_adapter(run_store, 1, None, Path(tmp) / "phase1")
    print(f"PROVED pull: adapter of {manifest['steps']} steps, {len(manifest['objects'])} files, checksums verified",
          flush=True)
    ledger = entries(run_store)
    prices = sorted({f"${e['hourly_price_usd']:.4f}/h" for e in ledger})
    print(f"PROVED spend in dollars: ${sum(e['usd'] for e in ledger):.4f} counted across "
          f"{', '.join(sorted(e['scope'] for e in ledger))} at {', '.join(prices)} (ledger {run_store.uri('spend')})",
          flush=True)
    print("smoke run passed", flush=True)
    return 0
