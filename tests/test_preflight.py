"""The preflight every cloud task runs first: CUDA (from what torch would report), the store, the
model's access on the Hub (a stand-in Hub on 127.0.0.1), one message and one exit code."""

from __future__ import annotations

import json
import subprocess

import pytest

from infra.exit_codes import PREFLIGHT_FAILED
from infra.preflight import GIB, CudaFacts, check_cuda, check_model_access, run_preflight
from infra.settings import load_settings
from tests.conftest import BUCKET, PYTHON, REPO
from tests.local_http import LocalService, QuietHandler

REAL = {"model": "sesame/csm-1b", "codec": "kyutai/mimi", "device": "cuda"}
GOOD_4090 = CudaFacts(True, "13.0", "13.0", "NVIDIA GeForce RTX 4090", 23 * GIB, 24 * GIB, True)


def test_a_gpu_with_room_and_bf16_passes():
    assert check_cuda(GOOD_4090, "train", load_settings(**REAL)) == []


def test_a_driver_older_than_torchs_cuda_is_named_with_the_fix():
    old = CudaFacts(False, "13.0", "12.4")
    (problem,) = check_cuda(old, "train", load_settings(**REAL))
    assert "CUDA 12.4" in problem and "CUDA 13.0" in problem and "580" in problem


def test_no_visible_gpu_fails_instead_of_training_on_the_cpu():
    (problem,) = check_cuda(CudaFacts(False, "13.0", None), "train", load_settings(**REAL))
    assert "no CUDA device" in problem


def test_too_little_free_memory_and_no_bf16_are_both_reported():
    t4_busy = CudaFacts(True, "13.0", "13.0", "Tesla T4", 6 * GIB, 15 * GIB, False)
    problems = check_cuda(t4_busy, "train", load_settings(**REAL))
    assert any("6.0 GiB free" in p and "needs 18 GiB" in p for p in problems)
    assert any("no bf16" in p for p in problems)
    # Preprocessing (the codec) needs far less, and no bf16.
    assert check_cuda(t4_busy, "preprocess", load_settings(**REAL)) == []


def test_cpu_runs_skip_the_cuda_checks():
    assert check_cuda(CudaFacts(False, None, None), "train", load_settings()) == []


class FakeHub(LocalService):
    """/api/models/<id>/auth-check as the Hub answers it: 401 without a valid token, 403 GatedRepo for
    a gated model whose licence the token's account has not accepted, 200 otherwise."""

    def __init__(self, accepted: set[str], gated: set[str], token: str = "hf_good"):
        outer = self
        self.calls = 0

        class Handler(QuietHandler):
            def do_GET(self):
                outer.calls += 1
                repo = self.path.removeprefix("/api/models/").removesuffix("/auth-check")
                authed = self.headers.get("authorization") == f"Bearer {token}"
                if not authed and repo in gated:
                    return self._answer(401, "RepoNotFound", "Invalid credentials in Authorization header")
                if repo in gated and repo not in accepted:
                    return self._answer(403, "GatedRepo", f"Access to model {repo} is restricted")
                self._answer(200, None, "")

            def _answer(self, code, error_code, message):
                body = json.dumps({"error": message} if message else {}).encode()
                headers = {"X-Error-Code": error_code} if error_code else {}
                self._reply(code, body, {**headers, "Content-Type": "application/json"})

        super().__init__(Handler)


def test_a_gated_model_needs_its_licence_accepted_and_a_token():
    with FakeHub(accepted=set(), gated={"sesame/csm-1b"}) as hub:
        (gated,) = check_model_access("sesame/csm-1b", "hf_good", hub.url)
        (no_token,) = check_model_access("sesame/csm-1b", None, hub.url)
        assert check_model_access("kyutai/mimi", None, hub.url) == []
    assert "accept it at https://huggingface.co/sesame/csm-1b" in gated
    assert "--secret HF_TOKEN" in no_token
    with FakeHub(accepted={"sesame/csm-1b"}, gated={"sesame/csm-1b"}) as hub:
        assert check_model_access("sesame/csm-1b", "hf_good", hub.url) == []
    assert check_model_access("tiny", None, "http://127.0.0.1:9") == []  # no network needed


def test_an_unreachable_hub_is_retried_then_reported():
    import requests

    calls = []

    def down(*args, **kwargs):
        calls.append(args)
        raise requests.ConnectionError("connection refused")

    waits: list[float] = []
    (problem,) = check_model_access("sesame/csm-1b", "hf_good", "http://hub.invalid", get=down, sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3 and "did not answer after retries" in problem


def test_the_store_must_be_writable(s3_endpoint, tmp_path):
    ok = load_settings(store=f"s3://{BUCKET}/pre-{tmp_path.name}", s3_endpoint_url=s3_endpoint)
    assert run_preflight(ok, "preprocess", environ={}) == []
    missing = load_settings(store="s3://no-such-bucket/x", s3_endpoint_url=s3_endpoint,
                            storage={"max_attempts": 1})
    (problem,) = run_preflight(missing, "preprocess", environ={})
    assert "cannot write and read the store s3://no-such-bucket/x" in problem


@pytest.mark.parametrize("accepted, code", [({"sesame/csm-1b"}, 0), (set(), PREFLIGHT_FAILED)])
def test_the_cli_exits_with_the_preflight_code_and_lists_every_problem(s3_endpoint, tmp_path, accepted, code):
    from infra.s3server import LOCAL_CREDENTIALS

    with FakeHub(accepted=accepted, gated={"sesame/csm-1b"}) as hub:
        env = {**LOCAL_CREDENTIALS, "PATH": "/usr/bin:/bin", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_good",
               "HOME": str(tmp_path), "SUARA_STORE": f"s3://{BUCKET}/cli-{tmp_path.name}",
               "SUARA_S3_ENDPOINT_URL": s3_endpoint, "SUARA_MODEL": "sesame/csm-1b", "SUARA_CODEC": "kyutai/mimi"}
        out = subprocess.run([PYTHON, "-m", "infra", "preflight", "--stage", "train"], capture_output=True,
                             text=True, cwd=REPO, env=env)
    assert out.returncode == code, out.stderr
    if code:
        assert "preflight failed (1 problem)" in out.stderr and "accept it at" in out.stderr
    else:
        assert "preflight passed" in out.stdout
