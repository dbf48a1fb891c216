"""`make bench-gpu`: the trainer on a random full-size CSM-1B on this machine's GPU.

    python -m trainer.gpu_bench [--steps 8] [--out docs/perf]

Runs only where CUDA is available (it exits with status 2 and says so elsewhere). It preprocesses
the bundled sample corpus with the random kyutai/mimi-shaped codec (timing Mimi encoding), then
measures the phase-1 trainer step over a grid around one base configuration (LoRA r16, depth
decoder on 1/16 of frames, length bucketing): each backend (Unsloth where installed, peft) at
batch 1/2/4/8, then at batch 4 one change at a time (LoRA r32, depth decoder on every frame,
bucketing off), a full fine-tune, and the notebook recipe (trainer/notebook_baseline.py) on the
same model and clips. For each: samples/s, audio-seconds/s, tokens/s, MFU (trainer/flops.py) and
peak allocated memory. The report goes to docs/perf/<gpu>-<date>.md with the goals marked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
GOALS = {"notebook_ratio": 5.0, "mfu": 0.35, "peak_gib_batch4": 20.0}
NO_CUDA = ("make bench-gpu measures the trainer on a GPU and this machine has no CUDA device "
           "(torch.cuda.is_available() is False); run it on a GPU machine, e.g. the GPU image on a cloud "
           "instance, or use `make bench` for the CPU benchmarks")
GiB = 2**30


@dataclass(frozen=True)
class Config:
    name: str
    backend: str = "peft"
    batch: int = 4
    r: int = 16
    depth_ratio: float = 1 / 16
    bucketing: bool = True
    mode: str = "lora"
    checkpointing: bool = False

    def train_settings(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "mode": self.mode, "lora": {"r": self.r, "alpha": 2 * self.r},
            "depth_decoder_frame_ratio": self.depth_ratio, "bucket_window_batches": 8 if self.bucketing else 1,
            "gradient_checkpointing": self.checkpointing, "log_every": 1000,
            "phases": {str(p): {"batch_size": self.batch, "lr": 1e-4, "max_steps": 10_000, "warmup_steps": 1}
                       for p in (1, 2, 3, 4)},
        }


@dataclass
class Result:
    config: Config
    samples_s: float
    audio_s_s: float
    tokens_s: float
    mfu: float | None
    peak_gib: float | None
    s_per_step: float
    note: str = ""


@dataclass
class Report:
    device: str
    results: list[Result] = field(default_factory=list)
    notebook: dict[int, float] = field(default_factory=dict)  # batch -> samples/s of the notebook recipe
    mimi_realtime: float | None = None
    steps: int = 0
    corpus: str = ""


def grid(backends: list[str]) -> list[Config]:
    configs = [Config(f"{b} b{n}", backend=b, batch=n) for b in backends for n in (1, 2, 4, 8)]
    for b in backends:
        configs += [Config(f"{b} b4 r32", backend=b, r=32), Config(f"{b} b4 depth 1", backend=b, depth_ratio=1.0),
                    Config(f"{b} b4 no bucketing", backend=b, bucketing=False)]
    configs.append(Config("peft b4 full, checkpointing", mode="full", checkpointing=True))
    return configs


def base_settings(root: Path, device: str, model: str, codec: str, cache_dir: Path | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "store": f"file://{root / 'store'}", "run_id": "bench", "model": model, "codec": codec, "device": device,
        "logging": {"wandb_mode": "disabled", "val_every": 0, "audio_every": 0},
    }
    if cache_dir is not None:
        settings["cache_dir"] = cache_dir
    return settings


def prepare_data(base: dict[str, Any]) -> float:
    """Preprocess the sample corpus into the bench store; the codec's encode speed (x real time)."""
    from infra.settings import load_settings
    from preprocess.codec import Codec
    from preprocess.manifest import read_manifest
    from preprocess.pipeline import input_store, run
    from preprocess.prepare import Prepared, prepare

    settings = load_settings(**base)
    run(settings, input_store(None, settings), progress=False)
    source = input_store(None, settings)
    clips = [p.audio for r in read_manifest(source)
             if isinstance(p := prepare((r, source.url, None, settings.preprocess, None)), Prepared)][:64]
    codec = Codec.load(settings.codec, settings.cache_dir, settings.device)
    codec.encode_batch(clips[:4])  # warm up kernels
    _sync()
    started = time.perf_counter()
    for i in range(0, len(clips), 16):
        codec.encode_batch(clips[i : i + 16])
    _sync()
    realtime = sum(len(c) for c in clips) / codec.sample_rate_hz / (time.perf_counter() - started)
    del codec
    _free()
    return realtime


def measure(base: dict[str, Any], config: Config, steps: int, warmup: int = 2) -> Result:
    """The trainer's step for one configuration: `warmup` untimed steps, then `steps` timed ones."""
    from infra.settings import load_settings
    from trainer.flops import batch_flops, mfu, peak_flops
    from trainer.loss import IGNORE
    from trainer.train import PhaseTrainer

    settings = load_settings(**base, train=config.train_settings())
    trainer = PhaseTrainer(settings, 1, progress=False, max_steps=10_000)
    try:
        trainer.setup()
        cuda = trainer.device.type == "cuda"
        for _ in range(warmup):
            trainer.train_step(trainer.next_batch().batches)
        _sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rows = frames = tokens = 0
        flops = 0.0
        started = time.perf_counter()
        for _ in range(steps):
            batches = trainer.next_batch().batches  # one per micro-batch: a forward pass each
            for batch in batches:
                targets = int((batch.labels[:, 1:, 0] != IGNORE).sum())
                depth = max(1, round(targets * config.depth_ratio)) if config.depth_ratio < 1 else targets
                flops += batch_flops(trainer.model.config, tuple(batch.input_ids.shape), depth, config.mode,
                                     config.r, tuple(settings.train.lora.target_modules), config.checkpointing).total
                tokens += int(batch.attention_mask.sum())
            result = trainer.train_step(batches)
            rows, frames = rows + result.samples, frames + result.frames
        _sync()
        seconds = time.perf_counter() - started
        device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
        return Result(config, rows / seconds, frames / 12.5 / seconds, tokens / seconds,
                      mfu(flops / steps, seconds / steps, peak_flops(device_name)),
                      torch.cuda.max_memory_allocated() / GiB if cuda else None, seconds / steps)
    finally:
        trainer.cleanup()
        del trainer
        _free()


def notebook_rate(base: dict[str, Any], batch: int, steps: int) -> float:
    """Samples/s of the notebook recipe on the same model (peft LoRA r16) and the same clips."""
    from infra.settings import load_settings
    from preprocess.manifest import read_manifest
    from preprocess.pipeline import input_store
    from preprocess.prepare import Prepared, prepare
    from trainer.notebook_baseline import Clip, NotebookStep, samples_per_second
    from trainer.train import PhaseTrainer

    settings = load_settings(**base, train=Config("notebook", batch=batch).train_settings())
    trainer = PhaseTrainer(settings, 1, progress=False, max_steps=10_000)
    try:
        trainer.setup()
        source = input_store(None, settings)
        clips = [Clip(trainer.speaker_index[r.speaker_id], r.text, p.audio) for r in read_manifest(source)
                 if isinstance(p := prepare((r, source.url, None, settings.preprocess, None)), Prepared)]
        step = NotebookStep(trainer.model, trainer.tokenizer, trainer.optimizer, trainer.params,
                            settings.train.grad_clip, trainer.device)
        batches = [clips[(i * batch) % len(clips):][:batch] for i in range(steps + 1)]
        return samples_per_second(step, [b for b in batches if len(b) == batch], warmup=1)
    finally:
        trainer.cleanup()
        del trainer
        _free()


def slug(device_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f} %"


def render(report: Report, date: dt.date) -> str:
    """The report as markdown: the grid, the notebook comparison and the goals."""
    lines = [f"# Trainer performance on {report.device} ({date.isoformat()})", "",
             "Random full-size CSM-1B (`random:sesame/csm-1b`), phase-1 trainer step on the bundled sample corpus "
             f"({report.corpus}); {report.steps} timed steps per row after warm-up. MFU counts model FLOPs "
             "(docs/perf/README.md) against the GPU's dense bf16 peak; peak memory is torch's peak allocated.", "",
             "| configuration | samples/s | audio s/s | tokens/s | MFU | peak GiB | s/step |",
             "|---|---|---|---|---|---|---|"]
    for r in report.results:
        lines.append(f"| {r.config.name}{' (' + r.note + ')' if r.note else ''} | {r.samples_s:.2f} | "
                     f"{r.audio_s_s:.1f} | {r.tokens_s:.0f} | {_percent(r.mfu)} | "
                     f"{_fmt(r.peak_gib, '.1f')} | {r.s_per_step:.3f} |")
    lines += ["", "## Against the notebook recipe", "",
              "| batch | notebook samples/s | ours (best backend) samples/s | ratio |", "|---|---|---|---|"]
    ratios = []
    for batch, rate in sorted(report.notebook.items()):
        ours = max((r.samples_s for r in report.results if r.config.batch == batch and r.config.mode == "lora"
                    and r.config.r == 16 and r.config.depth_ratio < 1 and r.config.bucketing), default=None)
        ratio = ours / rate if ours else None
        ratios.append(ratio)
        lines.append(f"| {batch} | {rate:.2f} | {_fmt(ours, '.2f')} | {_fmt(ratio, '.1f')}x |")
    if report.mimi_realtime is not None:
        lines += ["", f"Mimi encoding (random kyutai/mimi shape, batches of 16): {report.mimi_realtime:.0f}x "
                  "real time."]
    best_mfu = max((r.mfu for r in report.results if r.mfu is not None), default=None)
    b4 = [r.peak_gib for r in report.results if r.config.batch == 4 and r.config.mode == "lora"
          and r.config.r == 16 and r.config.depth_ratio < 1 and r.peak_gib is not None]
    checks = [
        (f">= {GOALS['notebook_ratio']:.0f}x the notebook recipe's samples/s",
         max((x for x in ratios if x), default=None), lambda v: v >= GOALS["notebook_ratio"], ".1f", "x"),
        (f">= {100 * GOALS['mfu']:.0f} % MFU", None if best_mfu is None else 100 * best_mfu,
         lambda v: v >= 100 * GOALS["mfu"], ".1f", " %"),
        (f"<= {GOALS['peak_gib_batch4']:.0f} GiB peak at batch 4", min(b4, default=None),
         lambda v: v <= GOALS["peak_gib_batch4"], ".1f", " GiB"),
    ]
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for goal, value, ok, spec, unit in checks:
        lines.append(f"| {goal} | {_fmt(value, spec)}{unit if value is not None else ''} | "
                     f"{'n/a' if value is None else ('yes' if ok(value) else 'no')} |")
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in environment().items()]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for package in ("transformers", "peft", "unsloth", "bitsandbytes"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = "not installed"
    return env


def write_report(report: Report, out_dir: Path, date: dt.date | None = None) -> Path:
    date = date or dt.date.today()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{slug(report.device)}-{date.isoformat()}.md"
    path.write_text(render(report, date))
    return path


def _in_child(args: argparse.Namespace, task: list[str]) -> dict[str, Any] | None:
    """Run one measurement in a fresh process (its own peak memory, no patches left behind by an
    earlier backend, an out-of-memory that ends only that row); its JSON result, or None."""
    cmd = [sys.executable, "-m", "trainer.gpu_bench", "--steps", str(args.steps), "--root", str(args.root), *task]
    if args.cache_dir:
        cmd += ["--cache-dir", str(args.cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("%s failed (exit %d): %s", " ".join(task), done.returncode, done.stderr[-1500:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.gpu_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--out", type=Path, default=Path("docs/perf"))
    parser.add_argument("--cache-dir", type=Path, help="where the random model is built (default: settings')")
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)  # the parent's scratch folder
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one configuration, by name, in a child
    parser.add_argument("--notebook", type=int, help=argparse.SUPPRESS)  # the notebook recipe at a batch size
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        print(f"error: {NO_CUDA}", file=sys.stderr)
        return 2
    import importlib.util

    from tqdm import tqdm

    from infra.models import RANDOM_CSM, RANDOM_MIMI

    backends = (["unsloth"] if importlib.util.find_spec("unsloth") else []) + ["peft"]
    configs = {c.name: c for c in grid(backends)}
    if args.measure or args.notebook:
        base = base_settings(args.root, "cuda", RANDOM_CSM, RANDOM_MIMI, args.cache_dir)
        if args.measure:
            result = asdict(measure(base, configs[args.measure], args.steps))
        else:
            result = {"samples_s": notebook_rate(base, args.notebook, args.steps)}
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="suara-bench-gpu-") as tmp:
        args.root = Path(tmp)
        base = base_settings(args.root, "cuda", RANDOM_CSM, RANDOM_MIMI, args.cache_dir)
        report = Report(torch.cuda.get_device_name(0), steps=args.steps,
                        corpus="108 clips, 1.2-5.2 s, 5.8 min, 2 speakers")
        report.mimi_realtime = prepare_data(base)
        for config in tqdm(configs.values(), desc="bench-gpu", unit="config"):
            found = _in_child(args, ["--measure", config.name])
            report.results.append(Result(**{**found, "config": config}) if found else
                                  Result(config, 0.0, 0.0, 0.0, None, None, 0.0, note="failed: see the log"))
        for batch in (2, 4):
            found = _in_child(args, ["--notebook", str(batch)])
            if found:
                report.notebook[batch] = found["samples_s"]
    path = write_report(report, args.out)
    print(f"wrote {path}")
    return 0


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
