"""`make bench-gpu`: refuses clearly without CUDA, measures through the real trainer, and writes a
report that marks the goals."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
import torch

from tests.conftest import PYTHON, REPO
from trainer.gpu_bench import Config, Report, Result, base_settings, measure, render, write_report


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine make bench-gpu measures instead")
def test_without_cuda_it_refuses_with_a_message_and_a_failing_status():
    done = subprocess.run([PYTHON, "-m", "trainer.gpu_bench"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "make bench" in done.stderr
    via_make = subprocess.run(["make", "-o", ".venv/.suara-setup", "bench-gpu"], capture_output=True, text=True,
                              cwd=REPO)
    assert via_make.returncode != 0 and "no CUDA device" in via_make.stderr


def test_one_configuration_is_measured_through_the_trainer(preprocessed_store, tmp_path, cache_dir):
    from tests.conftest import copy_store

    copy_store(preprocessed_store, tmp_path / "store")
    base = {**base_settings(tmp_path, "cpu", "tiny", "tiny", cache_dir), "run_id": "shared"}
    result = measure(base, Config("peft b2", batch=2), steps=2, warmup=1)
    assert result.samples_s > 0 and result.tokens_s > result.samples_s and result.audio_s_s > 0
    assert result.mfu is None and result.peak_gib is None  # no known peak, no CUDA allocator on CPU


def test_the_report_names_the_gpu_and_marks_each_goal(tmp_path):
    def row(name, batch, samples_s, mfu, peak, **kw):
        return Result(Config(name, batch=batch, **kw), samples_s, samples_s * 3.1, samples_s * 60, mfu, peak,
                      1 / samples_s)

    report = Report("NVIDIA H100 80GB HBM3", steps=8, corpus="108 clips", mimi_realtime=900.0,
                    results=[row("peft b2", 2, 20.0, 0.21, 9.5), row("peft b4", 4, 36.0, 0.38, 14.2),
                             row("peft b4 depth 1", 4, 12.0, 0.30, 19.0, depth_ratio=1.0)],
                    notebook={2: 3.0, 4: 5.0})
    path = write_report(report, tmp_path, dt.date(2026, 11, 30))
    assert path.name == "nvidia-h100-80gb-hbm3-2026-11-30.md"
    text = path.read_text()
    assert "| peft b4 | 36.00 | 111.6 | 2160 | 38.0 % | 14.2 | 0.028 |" in text
    assert "| 4 | 5.00 | 36.00 | 7.2x |" in text
    assert "| >= 5x the notebook recipe's samples/s | 7.2x | yes |" in text
    assert "| >= 35 % MFU | 38.0 % | yes |" in text
    assert "| <= 20 GiB peak at batch 4 | 14.2 GiB | yes |" in text
    assert "900x real time" in text
    slower = render(Report("NVIDIA L4", results=[row("peft b4", 4, 4.0, 0.1, 22.0)], notebook={4: 2.0}),
                    dt.date(2026, 11, 30))
    assert "| >= 5x the notebook recipe's samples/s | 2.0x | no |" in slower
    assert "| <= 20 GiB peak at batch 4 | 22.0 GiB | no |" in slower
