"""An OpenAI-compatible speech server for a published phase (FastAPI + uvicorn).

    python -m trainer serve --phase 3 [--speaker S] [--host 127.0.0.1 --port 8000]

    POST /v1/audio/speech   {"model", "input", "voice", "response_format": wav|flac|pcm, "speed"}
    GET  /v1/models         the model id, with the voices (speakers) it offers
    GET  /healthz           the process is up (and how many requests wait)
    GET  /readyz            200 once the model is loaded (SkyPilot Serve's readiness probe), else 503
    GET  /                  a page to type text and listen

The model is not thread-safe, so one worker thread loads it and then generates one request at a
time. Requests wait in a queue of `max_queue`; past that they are refused at once with 429, which
is what sheds load (SkyPilot Serve adds replicas as requests per second grow). Bad input is a 422
with a message that says what to change; a failed generation is a 500 with its error, and the
server carries on. `pcm` is 16-bit little-endian mono at the codec's 24 kHz, as OpenAI's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from trainer.pieces import split_text
from trainer.synth import SynthOptions

log = logging.getLogger(__name__)
FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
# OpenAI's model names, accepted so that clients written for OpenAI work unchanged.
OPENAI_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


@dataclass(frozen=True)
class ServeOptions:
    model_id: str
    max_queue: int = 8  # requests waiting behind the one being generated
    max_input_chars: int = 4096  # OpenAI's limit
    synth: SynthOptions = field(default_factory=SynthOptions)

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue {self.max_queue} must be at least 1")
        if self.max_input_chars < 1:
            raise ValueError(f"max_input_chars {self.max_input_chars} must be at least 1")


class SpeechRequest(BaseModel):
    """OpenAI's speech request; the values are checked in the endpoint, each with its own message."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str
    voice: str
    response_format: str = "wav"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str | None = None


class ShuttingDown(RuntimeError):
    """The server stopped before this request's turn came."""


class SpeechWorker:
    """One thread: loads the engine (a trainer.synth.Synthesizer), then runs queued jobs in order."""

    def __init__(self, load: Callable[[], Any], max_queue: int, on_failure: Callable[[], None] | None = None):
        self._load = load
        self._jobs: queue.Queue[tuple[Future, Callable[[Any], Any]] | None] = queue.Queue(maxsize=max_queue)
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run, name="speech-worker", daemon=True)
        self.state = "loading"  # then "ready", or "failed"
        self.error: str | None = None
        self.engine: Any = None
        self.running = 0

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Callable[[Any], Any]) -> Future:
        """Queue `job(engine)`; raises queue.Full when `max_queue` jobs already wait."""
        future: Future = Future()
        self._jobs.put_nowait((future, job))
        return future

    def stop(self, wait_s: float = 60.0) -> None:
        """Refuse what still waits, let the current job finish (up to `wait_s`), end the thread."""
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].set_exception(ShuttingDown("the server is shutting down; send the request again"))
        with suppress(queue.Full):  # emptied above; a request that raced in is refused below
            self._jobs.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(wait_s)

    def _run(self) -> None:
        try:
            self.engine = self._load()
            split_text("Warm up the text frontend.")  # its word tables load on first use
        except Exception as exc:
            log.exception("loading the model failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            if self._on_failure is not None:
                self._on_failure()
            return
        self.state = "ready"
        log.info("model loaded: voices %s", sorted(self.engine.voices))
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue  # its client went away while it waited
            self.running = 1
            try:
                future.set_result(job(self.engine))
            except BaseException as exc:  # the request fails, the worker goes on
                future.set_exception(exc)
            finally:
                self.running = 0


def create_app(load: Callable[[], Any], options: ServeOptions, on_failure: Callable[[], None] | None = None) -> Any:
    """The FastAPI app; `load()` runs on the worker thread at start and returns the engine."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    worker = SpeechWorker(load, options.max_queue, on_failure)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: Any):
        worker.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    app = FastAPI(title="Suara speech", lifespan=lifespan)
    app.state.worker = worker

    def error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
              headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return error(422, "; ".join(problems) or "the request body is not valid JSON")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return error(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")

    def voices() -> list[str]:
        return sorted(worker.engine.voices) if worker.state == "ready" else []

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": worker.state, "queued": worker.queued, "running": worker.running,
                "max_queue": options.max_queue}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if worker.state == "ready":
            return JSONResponse({"ready": True, "voices": voices()})
        return JSONResponse({"ready": False, "model": worker.state, "error": worker.error}, status_code=503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": created,
                                            "owned_by": "suara", "voices": voices()}]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace("{model}", options.model_id)

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest) -> Response:
        if worker.state != "ready":
            message = "the model is still loading; retry shortly" if worker.state == "loading" else \
                f"the model failed to load: {worker.error}"
            return error(503, message, kind="server_error", headers={"Retry-After": "10"})
        if body.model not in (options.model_id, *OPENAI_ALIASES):
            return error(422, f"unknown model {body.model!r}; this server has {options.model_id!r}", "model")
        if body.response_format not in FORMATS:
            return error(422, f"response_format {body.response_format!r} is not supported; use one of "
                              f"{sorted(FORMATS)}", "response_format")
        if not 0.25 <= body.speed <= 4.0:
            return error(422, f"speed {body.speed} must be between 0.25 and 4.0", "speed")
        if body.instructions:
            return error(422, "instructions are not supported: CSM takes no style prompt", "instructions")
        if body.stream_format not in (None, "audio"):
            return error(422, f"stream_format {body.stream_format!r} is not supported; the audio comes whole",
                         "stream_format")
        if not body.input.strip():
            return error(422, "input is empty; give the text to say", "input")
        if len(body.input) > options.max_input_chars:
            return error(422, f"input has {len(body.input)} characters; the limit is {options.max_input_chars}",
                         "input")
        if body.voice not in worker.engine.voices:
            return error(422, f"unknown voice {body.voice!r}; this model has {voices()}", "voice")
        pieces = split_text(body.input, options.synth.max_chars)
        if not pieces:
            return error(422, "input has nothing to say after normalisation (no words, numbers or letters)", "input")
        synth = dataclasses.replace(options.synth, speed=body.speed)
        try:
            future = worker.submit(lambda engine: engine.speak(body.input, body.voice, synth, pieces=pieces))
        except queue.Full:
            return error(429, f"the server is busy ({options.max_queue} requests waiting); retry shortly",
                         kind="rate_limit_error", headers={"Retry-After": "5"})
        try:
            result = await asyncio.wrap_future(future)
        except ShuttingDown as exc:
            return error(503, str(exc), kind="server_error")
        except Exception as exc:
            log.exception("generation failed")
            return error(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
        headers = {"X-Sample-Rate": str(result.sample_rate), "X-Suara-Pieces": str(len(result.pieces)),
                   "X-Suara-Hit-Budget": str(len(result.hit_budget)), "X-Suara-Seconds": f"{result.seconds:.3f}"}
        return Response(encode(result.samples, result.sample_rate, body.response_format),
                        media_type=FORMATS[body.response_format], headers=headers)

    return app


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """16-bit audio as `fmt`; quantised once here, so every format holds the same samples."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    if fmt == "pcm":
        return pcm.tobytes()
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port). It listens before the address is printed, so a
    client that connects at once waits in the backlog until uvicorn accepts instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # uvicorn's default backlog
    return sock


def serve(load: Callable[[], Any], options: ServeOptions, host: str, port: int) -> int:
    """Run the server until SIGINT/SIGTERM; 0, or 1 when the model could not be loaded."""
    import uvicorn

    sock = bind(host, port)
    holder: dict[str, Any] = {}

    def failed() -> None:  # a replica without a model must exit so that it is replaced
        holder["server"].should_exit = True

    app = create_app(load, options, on_failure=failed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=30))
    holder["server"] = server
    bound = sock.getsockname()[1]
    print(f"serving {options.model_id} on http://{host}:{bound} (model loading; GET /readyz says when ready)",
          flush=True)
    server.run(sockets=[sock])
    return 1 if app.state.worker.state == "failed" else 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Suara</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
textarea { width: 100%; height: 8rem; font-size: 1rem; }
label { margin-right: 1rem; } #status { color: #555; } .error { color: #b00; }
</style></head>
<body>
<h1>Suara</h1>
<p>Model <code>{model}</code>. Type Malay, English, pinyin or a mix, and listen.</p>
<textarea id="text">Okay lah, saya pergi dulu. See you tomorrow!</textarea>
<p>
<label>Voice <select id="voice"></select></label>
<label>Speed <input id="speed" type="number" min="0.25" max="4" step="0.05" value="1"></label>
<button id="say">Say it</button>
</p>
<p id="status"></p>
<audio id="player" controls></audio>
<script>
const status = document.getElementById("status");
async function loadVoices() {
  const models = await (await fetch("/v1/models")).json();
  const select = document.getElementById("voice");
  select.innerHTML = "";
  for (const v of models.data[0].voices) select.add(new Option(v, v));
  if (!select.options.length) { status.textContent = "Model loading..."; setTimeout(loadVoices, 3000); }
  else status.textContent = "";
}
document.getElementById("say").onclick = async () => {
  status.className = ""; status.textContent = "Generating...";
  const started = performance.now();
  const response = await fetch("/v1/audio/speech", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: "{model}", input: document.getElementById("text").value,
      voice: document.getElementById("voice").value, response_format: "wav",
      speed: parseFloat(document.getElementById("speed").value)})});
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    status.className = "error";
    status.textContent = response.status + ": " + ((body.error && body.error.message) || response.statusText);
    return;
  }
  const seconds = response.headers.get("X-Suara-Seconds"), cut = response.headers.get("X-Suara-Hit-Budget");
  document.getElementById("player").src = URL.createObjectURL(await response.blob());
  document.getElementById("player").play();
  status.textContent = seconds + " s of audio in " + ((performance.now() - started) / 1000).toFixed(1) + " s" +
    (cut !== "0" ? " (" + cut + " piece(s) may be cut short)" : "");
};
loadVoices();
</script>
</body></html>
"""
