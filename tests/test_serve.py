"""The OpenAI-compatible speech server: the official client, load shedding, errors, readiness, and
the SkyPilot Serve task. Servers listen on 127.0.0.1 on a free port and are stopped at the end.

Nothing here waits for a time window: a gate holds the worker while a burst is queued, and every
wait is for an event (the server started, a request accepted, the model loaded) with a deadline
only as a guard against a hang.
"""

from __future__ import annotations

import io
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from infra.settings import load_settings
from tests.conftest import PYTHON, REPO, subprocess_env
from trainer.serve import ServeOptions, bind, create_app
from trainer.synth import Synthesizer, SynthOptions

FAST = SynthOptions(max_seconds=0.24)  # 3 frames a piece: the mechanics, quickly
GPUS_24GB = {"RTX4090", "RTX3090", "RTXA5000", "L4", "A10G", "A10", "RTXA6000"}


def wait_for(condition, what: str, deadline_s: float = 300.0) -> None:
    """Poll until `condition()`; the deadline only turns a hang into a failure."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def voice(published_store, cache_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, far faster on a busy machine
    settings = load_settings(store=published_store, cache_dir=cache_dir, run_id="shared")
    yield Synthesizer.from_store(settings, 1)
    torch.set_num_threads(threads)


class Gate:
    """The real voice behind a gate: each request waits until the test opens it; `fail_next`
    makes the next generation raise, as a failing GPU would."""

    def __init__(self, voice):
        self.voice = voice
        self.voices = voice.voices
        self.open = threading.Event()
        self.fail_next = False

    def speak(self, *args, **kwargs):
        self.open.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory (the device refused this request)")
        return self.voice.speak(*args, **kwargs)


@contextmanager
def serving(load, **options):
    """The app under uvicorn in a thread on 127.0.0.1:<free port>; yields its base URL."""
    import uvicorn

    app = create_app(load, ServeOptions(model_id="suara-phase1", synth=FAST, **options))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(120)
        assert not thread.is_alive(), "the server did not stop"


def _say(url: str, **fields) -> httpx.Response:
    body = {"model": "suara-phase1", "input": "Okay lah.", "voice": "speaker_01", **fields}
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=600)


def test_readiness_follows_the_model_load_and_requests_wait_for_it(voice):
    loaded = threading.Event()

    def load():
        loaded.wait()
        return voice

    with serving(load) as url:
        assert httpx.get(f"{url}/healthz").json()["model"] == "loading"
        assert httpx.get(f"{url}/readyz").status_code == 503
        early = _say(url)
        assert early.status_code == 503 and "loading" in early.json()["error"]["message"]
        assert early.headers["retry-after"]
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["voices"] == []
        loaded.set()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the model to load")
        assert httpx.get(f"{url}/readyz").json()["voices"] == ["speaker_01", "speaker_02"]
        assert _say(url).status_code == 200


def test_a_burst_is_answered_or_refused_cleanly_and_no_request_is_lost(voice):
    bound = 2
    gate = Gate(voice)
    with serving(lambda: gate, max_queue=bound) as url:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the model to load")
        results: list[int | str] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            try:
                response = _say(url, input=f"Okay lah, nombor {i}.")
                outcome: int | str = response.status_code
                if response.status_code == 200:
                    audio, rate = sf.read(io.BytesIO(response.content))
                    assert rate == 24_000 and len(audio) > 0
                elif response.status_code == 429:
                    assert "busy" in response.json()["error"]["message"]
                    assert response.headers["retry-after"]
            except Exception as exc:  # a lost request would show up here
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                results.append(outcome)

        def health() -> dict:
            return httpx.get(f"{url}/healthz").json()

        first = threading.Thread(target=client, args=(0,))
        first.start()
        wait_for(lambda: health()["running"] == 1, "the first request to reach the worker")
        burst = [threading.Thread(target=client, args=(i,)) for i in range(1, 3 * bound + 1)]
        for thread in burst:
            thread.start()
        # Every request of the burst is either waiting in the queue or already refused.
        wait_for(lambda: health()["queued"] + sum(r == 429 for r in results) == 3 * bound,
                 "the burst to be queued or refused")
        gate.open.set()
        for thread in [first, *burst]:
            thread.join(600)
        assert not any(t.is_alive() for t in [first, *burst]), "a request hung"
        assert Counter(results) == {200: bound + 1, 429: 2 * bound}  # all answered or refused, none lost
        assert health() == {"status": "ok", "model": "ready", "queued": 0, "running": 0, "max_queue": bound}


def test_a_failed_generation_is_a_500_with_its_error_and_the_server_carries_on(voice):
    gate = Gate(voice)
    gate.open.set()
    with serving(lambda: gate) as url:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the model to load")
        gate.fail_next = True
        failed = _say(url)
        assert failed.status_code == 500
        assert failed.json()["error"]["message"] == ("generation failed: RuntimeError: CUDA out of memory "
                                                     "(the device refused this request)")
        assert _say(url).status_code == 200
        assert httpx.get(f"{url}/healthz").json()["model"] == "ready"


BAD_REQUESTS = [
    ({"input": ""}, "input", "input is empty"),
    ({"input": "   \n "}, "input", "input is empty"),
    ({"input": "😀 🎉"}, "input", "nothing to say"),
    ({"input": "a" * 101}, "input", "101 characters; the limit is 100"),
    ({"voice": "alloy"}, "voice", "unknown voice 'alloy'; this model has ['speaker_01', 'speaker_02']"),
    ({"response_format": "mp3"}, "response_format", "'mp3' is not supported; use one of ['flac', 'pcm', 'wav']"),
    ({"speed": 9.0}, "speed", "between 0.25 and 4.0"),
    ({"model": "whisper-1"}, "model", "unknown model 'whisper-1'"),
    ({"instructions": "Speak cheerfully."}, "instructions", "not supported"),
    ({"input": 42}, None, "input: Input should be a valid string"),
    ({"speaker": "speaker_01"}, None, "speaker: Extra inputs are not permitted"),
]


def test_bad_requests_are_refused_with_422_and_a_message_that_says_what_to_change(voice):
    with serving(lambda: voice, max_input_chars=100) as url:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the model to load")
        for fields, param, message in BAD_REQUESTS:
            response = _say(url, **fields)
            assert response.status_code == 422, fields
            error = response.json()["error"]
            assert message in error["message"] and error["param"] == param, (fields, error)
        missing = httpx.post(f"{url}/v1/audio/speech", json={"input": "Okay lah."}, timeout=60)
        assert missing.status_code == 422 and "model: Field required" in missing.json()["error"]["message"]
        assert _say(url).status_code == 200  # and the server is still there


def test_every_format_comes_back_as_openai_describes_it(voice):
    with serving(lambda: voice) as url:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the model to load")
        wav, flac, pcm = (_say(url, response_format=f) for f in ("wav", "flac", "pcm"))
        assert wav.headers["content-type"] == "audio/wav" and flac.headers["content-type"] == "audio/flac"
        from_wav, rate = sf.read(io.BytesIO(wav.content), dtype="int16")
        from_flac, _ = sf.read(io.BytesIO(flac.content), dtype="int16")
        raw = np.frombuffer(pcm.content, dtype="<i2")  # 16-bit little-endian mono, 24 kHz
        assert rate == 24_000 and np.array_equal(from_wav, from_flac) and np.array_equal(raw, from_wav)
        assert int(wav.headers["x-suara-pieces"]) == 1 and wav.headers["x-suara-hit-budget"] == "1"


def test_the_page_at_the_root_lets_a_person_type_and_listen(voice):
    with serving(lambda: voice) as url:
        page = httpx.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<textarea" in page.text and "/v1/audio/speech" in page.text and "suara-phase1" in page.text


def readme_client_snippet() -> str:
    serving = (REPO / "README.md").read_text().split("## Serving", 1)[1]
    return re.search(r"```python\n(.*?)```", serving, re.S).group(1)


def test_the_serve_command_answers_the_official_openai_client_as_the_readme_shows(published_store, make_settings,
                                                                               tmp_path):
    """As README.md says: `python -m trainer serve --phase 3`, then its `openai` snippet, as typed."""
    import openai

    settings = make_settings(store=published_store, run_id="shared")
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    argv = ["serve", "--phase", "3", "--port", "0", "--max-seconds", "0.24"]
    server = subprocess.Popen([PYTHON, "-m", "trainer", *argv], env=subprocess_env(settings, OMP_NUM_THREADS="1"),
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        address = re.compile(r"on http://(127\.0\.0\.1:\d+)")
        wait_for(lambda: server.poll() is not None or address.search(log_path.read_text()), "the server's address")
        match = address.search(log_path.read_text())
        assert match, log_path.read_text()[-3000:]
        endpoint = match.group(1)
        # The address is printed once the socket listens: a connection is never refused, at worst it waits.
        wait_for(lambda: server.poll() is not None
                 or httpx.get(f"http://{endpoint}/readyz", timeout=120).status_code == 200, "the model to load")
        assert server.poll() is None, log_path.read_text()[-3000:]

        snippet = subprocess.run([PYTHON, "-c", readme_client_snippet()], cwd=tmp_path, capture_output=True,
                                 text=True, env={"ENDPOINT": endpoint, "PATH": "/usr/bin:/bin"})
        assert snippet.returncode == 0, snippet.stderr[-3000:]
        audio, rate = sf.read(tmp_path / "hello.wav")
        assert rate == 24_000 and len(audio) > 0

        client = openai.OpenAI(base_url=f"http://{endpoint}/v1", api_key="not-needed", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["suara-phase3"]
        with pytest.raises(openai.UnprocessableEntityError, match="unknown voice 'nova'"):
            client.audio.speech.create(model="suara-phase3", voice="nova", input="Hello.")
    finally:
        server.terminate()
        code = server.wait(120)
        log.close()
    # uvicorn finishes the requests and the app's shutdown, then re-raises SIGTERM for the parent to see.
    assert code == -signal.SIGTERM and "Application shutdown complete" in log_path.read_text()


def test_a_server_whose_model_cannot_load_exits_with_an_error(make_settings, tmp_path):
    settings = make_settings(store=f"file://{tmp_path / 'empty'}", run_id="nothing")
    result = subprocess.run([PYTHON, "-m", "trainer", "serve", "--phase", "3", "--port", "0"],
                            env=subprocess_env(settings), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "no adapter for phase 3" in result.stderr


# -- SkyPilot Serve ------------------------------------------------------------------------------------
def test_the_serve_task_is_a_valid_skypilot_service_with_a_readiness_probe_on_the_ready_endpoint():
    from sky.serve import serve_utils

    import sky

    task = sky.Task.from_yaml(str(REPO / "sky" / "serve.yaml"))
    serve_utils.validate_service_task(task, pool=False)  # what `sky serve up` checks before launching
    service = task.service
    assert task.name == "suara-serve" and service.readiness_path == "/readyz"
    assert service.min_replicas == 1 and service.max_replicas > 1 and service.target_qps_per_replica > 0
    app_paths = {route.path for route in create_app(lambda: None, ServeOptions(model_id="m")).routes}
    assert {"/readyz", "/healthz", "/v1/audio/speech", "/v1/models", "/"} <= app_paths
    for resources in task.resources:
        assert set(resources.accelerators) <= GPUS_24GB and resources.ports == ["8000"]
    phase1 = yaml.safe_load((REPO / "sky" / "phase1.yaml").read_text())
    spec = yaml.safe_load((REPO / "sky" / "serve.yaml").read_text())
    assert spec["resources"]["image_id"] == phase1["resources"]["image_id"]  # the one image
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"} <= set(spec["secrets"])
    assert not set(spec["secrets"]) & set(spec["envs"])
    header = (REPO / "sky" / "serve.yaml").read_text().split("\nname:")[0]
    assert "sky serve up sky/serve.yaml" in header and "Override example" in header


def test_the_serve_task_runs_a_command_the_cli_accepts_on_the_port_it_opens():
    spec = yaml.safe_load((REPO / "sky" / "serve.yaml").read_text())
    command = spec["run"].strip().splitlines()[-1]
    expanded = command.replace("${SPEAKER:+--speaker \"$SPEAKER\"}", "--speaker speaker_01")
    argv = shlex.split(expanded.replace('"$PHASE"', spec["envs"]["PHASE"]).replace('"$MAX_QUEUE"', "8"))
    assert argv[:4] == ["python", "-m", "trainer", "serve"]
    assert argv[argv.index("--port") + 1] == str(spec["resources"]["ports"])
    from trainer.__main__ import _parser

    args = _parser().parse_args(argv[3:])
    assert (args.phase, args.speaker, args.host, args.port) == (3, "speaker_01", "0.0.0.0", 8000)
