"""Suara's settings: one typed model, read once at start and passed down.

Sources, highest priority first: keyword arguments (what a CLI flag sets), environment variables
(`SUARA_` prefix, `__` between nested fields: `SUARA_TRAIN__PHASES__1__LR=1e-4`), one optional YAML
file (`--config FILE` or `SUARA_CONFIG`), then `infra/defaults.yaml` (the seed's phase plan) and the
defaults below. Sources deep-merge, so one nested field can be overridden alone. Unknown keys and bad values fail
at start with the field's name; all problems are reported in one error.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from infra.models import pairing_error

ENV_PREFIX = "SUARA_"
DEFAULTS_YAML = Path(__file__).with_name("defaults.yaml")
_yaml_path: ContextVar[Path | None] = ContextVar("suara_yaml_path", default=None)


class _YamlSource(YamlConfigSettingsSource):
    """YAML source whose mapping keys are strings, as environment keys are, so `phases: {2: ...}` in
    a file and `SUARA_TRAIN__PHASES__2__LR` deep-merge into one entry."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        return _str_keys(super()._read_file(file_path))


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    return value


class SettingsError(ValueError):
    """Settings that cannot be used; the message names every bad field and how to set it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EarlyStopping(_Strict):
    """Stop a phase when a validation figure has not improved for `patience_steps` steps; the phase
    then publishes its best checkpoint (by that figure) as its adapter."""

    # A figure validation produces (logged under this name): val/loss (the mean of the categories),
    # val/single_language, val/code_switched, val/particle, or val/mcd.
    metric: str = "val/loss"
    patience_steps: int = Field(gt=0)
    mode: Literal["min", "max"] = "min"  # min: lower is better (a loss, MCD)


class PhasePlan(_Strict):
    """One progressive fine-tuning phase (values from the seed's phase plan)."""

    lr: float = Field(gt=0)
    max_steps: int = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    # The effective batch of one optimizer step; with accumulation k, k micro-batches of
    # batch_size / k samples each are forwarded in turn and their gradients summed.
    batch_size: int = Field(default=4, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    # Loss weight of frames inside a particle word / near a language switch (the seed's emphasis).
    particle_weight: float = Field(default=1.0, ge=0)
    switch_weight: float = Field(default=1.0, ge=0)
    # Share of each batch drawn from earlier phases' training data (0 = none).
    replay_share: float = Field(default=0.0, ge=0, lt=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    early_stopping: EarlyStopping | None = None  # None: train to max_steps

    @model_validator(mode="after")
    def _warmup_fits(self) -> PhasePlan:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be < max_steps {self.max_steps}")
        return self

    @model_validator(mode="after")
    def _micro_batches_fit(self) -> PhasePlan:
        k = self.gradient_accumulation_steps
        if self.batch_size % k:
            fits = [d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps {k}: batch_size "
                f"is the effective batch and each micro-batch holds batch_size / gradient_accumulation_steps "
                f"samples; use an accumulation that divides it ({', '.join(map(str, fits))}) or a batch_size "
                f"that is a multiple of {k}")
        return self

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.gradient_accumulation_steps


class LoraSettings(_Strict):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class BudgetSettings(_Strict):
    """Money: the instance's hourly price (the launcher sets it) and the caps."""

    hourly_price_usd: float = Field(default=0.0, ge=0)
    max_cost_usd: float | None = Field(default=None, gt=0)  # the whole campaign (all phases)
    # Used to refuse a phase whose remaining budget cannot pay one checkpoint interval, until a
    # measured figure is available from an earlier attempt.
    seconds_per_step_estimate: float = Field(default=1.0, gt=0)
    # Start-up (image, model download and load) before the first step, until an attempt measured it.
    startup_seconds_estimate: float = Field(default=120.0, ge=0)
    heartbeat_s: float = Field(default=60.0, gt=0)
    # When the task started paying (Unix seconds; the task files set it as their first command), so
    # spend counts preflight, downloads and model loading too. None: from the process's start.
    task_started_at: float | None = None
    # Provisioning and the image pull before a task starts, which no process sees: charged once per
    # attempt (each recovery pays its own start-up).
    provision_seconds_estimate: float = Field(default=0.0, ge=0)


class LoggingSettings(_Strict):
    wandb_project: str = "suara"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    val_every: int = Field(default=200, ge=0)  # 0 = never (early stopping needs it)
    val_batches: int = Field(default=4, gt=0)
    audio_every: int = Field(default=0, ge=0)  # 0 = never; generating audio costs seconds
    audio_max_seconds: float = Field(default=4.0, gt=0)
    # TensorBoard event files beside W&B, kept in the run's store under tensorboard/<scope>/.
    tensorboard: bool = True


class StorageSettings(_Strict):
    """How long one object-store request may take and how often a failed one is retried.

    A read from a hanging endpoint ends after `read_timeout_s`; throttling (503 SlowDown), 5xx
    answers, dropped connections and timeouts are retried with exponential backoff up to
    `max_attempts` tries in all, inside the process; what outlives that fails the job, which the
    managed job restarts (job_recovery.max_restarts_on_errors).
    """

    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)


class EvaluationSettings(_Strict):
    """`python -m trainer evaluate` and the evaluation at the end of a phase."""

    # YAML files a user edits: the expected particle shapes (default: preprocess/particle_shapes.yaml)
    # and the fixed prompts per category (default: trainer/eval_prompts.yaml).
    particle_shapes: Path | None = None
    prompts: Path | None = None
    test_utterances: int = Field(default=12, ge=0)  # held-out test clips per category (0 = prompts only)
    max_seconds: float = Field(default=8.0, gt=0)  # generation cap per utterance
    # A speech recogniser (transformers ASR pipeline: hub id or local path) for CER; unset = no CER.
    asr_model: str | None = None
    # Evaluate each phase's adapter as the last step of its training job (minutes on a CPU).
    after_phase: bool = False
    # Clips used to score a checkpoint when train.best_metric is mcd.
    mcd_clips: int = Field(default=4, gt=0)


class FaultSettings(_Strict):
    """Fault injection for chaos tests: the trainer kills itself with SIGKILL at an exact point of
    its progress (after micro-batch `sigkill_after_micro_batch` of step `sigkill_at_step`), so a
    test can interrupt it mid-accumulation on any machine, however fast or loaded."""

    sigkill_at_step: int | None = Field(default=None, gt=0)
    sigkill_after_micro_batch: int = Field(default=1, gt=0)


class PreemptionSettings(_Strict):
    # IMDSv2 base URL to poll for an AWS spot interruption notice (set only on AWS).
    imds_url: str | None = None
    imds_poll_s: float = Field(default=5.0, gt=0)


class TrainSettings(_Strict):
    # The seed's plan lives in infra/defaults.yaml, so one field can be overridden without
    # restating the phase (sources deep-merge; model defaults would not).
    phases: dict[int, PhasePlan]
    lora: LoraSettings = Field(default_factory=LoraSettings)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=0.3, gt=0)
    checkpoint_every: int = Field(default=100, gt=0)
    keep_last_checkpoints: int = Field(default=3, gt=0)
    # Besides the last N, the best K checkpoints by `best_metric` are never pruned (0 = none):
    # val_loss = the mean of the validation categories; mcd = evaluation's MCD on validation clips.
    keep_best_checkpoints: int = Field(default=0, ge=0)
    best_metric: Literal["val_loss", "mcd"] = "val_loss"
    # lora: adapters on a frozen base; full: every weight but the codec (a new language on 24 GB).
    mode: Literal["lora", "full"] = "lora"
    # unsloth (CUDA only, LoRA only): Unsloth's patched model, its LoRA and its gradient
    # checkpointing; peft: transformers + peft; auto: unsloth for LoRA when CUDA and the package are
    # there, else peft. Full fine-tuning always runs on peft, with fp32 master weights.
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    load_in_4bit: bool = False  # unsloth only: a 4-bit (QLoRA) base instead of 16-bit
    # peft backend: recompute each layer's activations in the backward pass instead of keeping them
    # (far less activation memory for about a third more compute). Unsloth always checkpoints.
    gradient_checkpointing: bool = False
    # adamw: fp32 moments; adamw_8bit: bitsandbytes' 8-bit moments (CUDA only; a quarter of the
    # memory); auto: adamw_8bit on CUDA when bitsandbytes is installed, else adamw.
    optimizer: Literal["auto", "adamw", "adamw_8bit"] = "auto"
    # Batches built ahead of the step on a background thread (tokens, masks, padding); 0 = built on
    # the training thread. The samples and their order are the same either way.
    prefetch_batches: int = Field(default=2, ge=0)
    # Length bucketing: batches are cut from a window of this many batches' samples sorted by
    # length, each under `frame_budget` padded sequence positions (rows x the longest row, counting
    # text tokens, audio frames and any context turn; None: just `batch_size` samples).
    bucket_window_batches: int = Field(default=8, gt=0)
    frame_budget: int | None = Field(default=None, gt=0)
    # Share of targets trained with a reference clip of the same speaker before them (its frames
    # are context, never targets): voice-cloning-style conversations.
    context_share: float = Field(default=0.0, ge=0, le=1)
    # Share of audio frames the depth decoder (codebooks 1..K-1) is trained on; Sesame used 1/16.
    depth_decoder_frame_ratio: float = Field(default=1.0, gt=0, le=1)
    log_every: int = Field(default=10, gt=0)
    # No finished step (a hung read, download or step) for this long: the watchdog tries an
    # emergency checkpoint and exits with the retryable code STALLED (infra/exit_codes.py). Far
    # above a step, a checkpoint upload or a validation pass on a slow machine.
    stall_timeout_s: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _backend_fits_mode(self) -> TrainSettings:
        if self.backend == "unsloth" and self.mode == "full":
            raise ValueError(
                "train.backend=unsloth cannot do train.mode=full: Unsloth's full fine-tuning keeps bf16 weights "
                "without fp32 master copies, so small updates round away; use backend=peft (or auto), which "
                "keeps fp32 master weights, or mode=lora"
            )
        return self

    @field_validator("phases")
    @classmethod
    def _four_phases(cls, phases: dict[int, PhasePlan]) -> dict[int, PhasePlan]:
        if sorted(phases) != [1, 2, 3, 4]:
            raise ValueError(f"phases must be exactly 1, 2, 3, 4; got {sorted(phases)}")
        return phases


class PreprocessSettings(_Strict):
    sample_rate_hz: int = 24_000  # Mimi's rate; fixed by the codec
    min_input_rate_hz: int = Field(default=16_000, gt=0)
    min_duration_s: float = Field(default=0.5, ge=0)
    max_duration_s: float = Field(default=20.0, gt=0)
    # Files longer than this by their header are refused without being decoded, and decoding stops
    # there if the header understated it (None: 3 x max_duration_s, leaving room for edge silence).
    max_input_duration_s: float | None = Field(default=None, gt=0)
    max_audio_mb: float = Field(default=256.0, gt=0)  # larger files are refused from their size, unread
    # A read of an input file that makes no progress this long (a stalled network filesystem or S3
    # read) is abandoned and the row quarantined; a worker busy with one row this long is stopped.
    read_timeout_s: float = Field(default=60.0, gt=0)
    row_timeout_s: float = Field(default=900.0, gt=0)
    target_lufs: float = -23.0
    min_loudness_lufs: float = -80.0  # quieter speech is `too_quiet` (normalising it would lift its noise floor too)
    peak_dbfs: float = Field(default=-1.0, le=0)
    trim_top_db: float = Field(default=40.0, gt=0)
    keep_silence_s: float = Field(default=0.2, ge=0, le=0.5)
    # Cleaning steps that can be switched (mono and resampling to the codec's rate always happen).
    trim: bool = True
    loudness: bool = True
    denoise: bool = False  # spectral gating against the clip's own noise floor
    max_clipping_ratio: float = Field(default=0.001, ge=0, le=1)
    min_snr_db: float = 15.0
    min_speech_ratio: float = Field(default=0.3, ge=0, le=1)  # share of the file above the silence threshold
    min_chars_per_s: float = Field(default=2.0, ge=0)  # implausible speaking rates are transcript errors
    max_chars_per_s: float = Field(default=30.0, gt=0)
    switch_margin_s: float = Field(default=0.24, ge=0)  # frames this close to a language switch are "switch"
    # Word timings when the manifest has none: Montreal Forced Aligner trained on the corpus (mfa;
    # auto uses it where the `mfa` command exists), espeak-ng + DTW (auto: where espeak-ng is), or a
    # proportional split of the speech by word length. Rows MFA cannot align fall back in that order.
    aligner: Literal["auto", "mfa", "espeak_dtw", "proportional"] = "auto"
    workers: int = Field(default=0, ge=0)  # processes for the per-row work; 0 = one per core
    codec_batch: int = Field(default=16, gt=0)  # clips per Mimi forward pass

    @model_validator(mode="after")
    def _bounds(self) -> PreprocessSettings:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(f"min_duration_s {self.min_duration_s} must be < max_duration_s {self.max_duration_s}")
        if self.max_input_duration_s is not None and self.max_input_duration_s < self.max_duration_s:
            raise ValueError(f"max_input_duration_s {self.max_input_duration_s} must be >= max_duration_s "
                             f"{self.max_duration_s}")
        return self


class Settings(BaseSettings):
    """Everything a Suara job needs to know, with the embedded local defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    # Where everything a run writes goes: `file:///abs/dir`, a relative path, or `s3://bucket/prefix`.
    store: str = "file://.suara/store"
    s3_endpoint_url: str | None = None
    run_id: str = Field(default="local", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int = 1234
    # "tiny" builds a small randomly initialised CSM/Mimi offline; otherwise a hub id or local path.
    model: str = "tiny"
    codec: str = "tiny"
    cache_dir: Path = Path.home() / ".cache" / "suara"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The Docker image the cloud tasks run (`REGISTRY/suara:TAG`, what `make push` prints); the
    # cloud launcher puts it into every task and refuses to launch without it.
    image: str | None = None
    preprocess: PreprocessSettings = Field(default_factory=PreprocessSettings)
    train: TrainSettings
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    preemption: PreemptionSettings = Field(default_factory=PreemptionSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.startswith("s3://"):
            if len(value) <= len("s3://") or value[len("s3://")] == "/":
                raise ValueError(f"{value!r} has no bucket; use s3://BUCKET/PREFIX")
            return value.rstrip("/")
        if "://" in value and not value.startswith("file://"):
            raise ValueError(f"{value!r}: only file:// directories and s3:// prefixes are supported")
        path = Path(value.removeprefix("file://")).expanduser()
        return "file://" + str(path.resolve())

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None  # empty means AWS S3's default endpoint
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _codec_matches_model(self) -> Settings:
        problem = pairing_error(self.model, self.codec)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _early_stopping_has_validation(self) -> Settings:
        stopping = [str(p) for p, plan in sorted(self.train.phases.items()) if plan.early_stopping is not None]
        if stopping and self.logging.val_every == 0:
            raise ValueError(
                f"early stopping (train.phases.{stopping[0]}.early_stopping) watches a validation figure, but "
                "logging.val_every is 0 (no validation); set SUARA_LOGGING__VAL_EVERY to a step interval")
        return self

    @property
    def run_prefix(self) -> str:
        """Key prefix of this run inside the store."""
        return f"runs/{self.run_id}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _yaml_path.get()
        if yaml_path is not None:
            sources.append(_YamlSource(settings_cls, yaml_file=yaml_path))
        sources.append(_YamlSource(settings_cls, yaml_file=DEFAULTS_YAML))
        return tuple(sources)


def _field_env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Read settings once: overrides > environment > YAML file > infra/defaults.yaml > defaults.

    `config` (or `SUARA_CONFIG`) names an optional YAML file. Raises SettingsError listing every
    bad field at once.
    """
    path = config if config is not None else os.environ.get(f"{ENV_PREFIX}CONFIG")
    yaml_path = Path(path) if path else None
    if yaml_path is not None and not yaml_path.is_file():
        raise SettingsError(f"settings file {yaml_path} does not exist (from --config or {ENV_PREFIX}CONFIG)")
    # The environment source ignores names it does not know; a typo there must fail like one in a file.
    fields = {name.upper() for name in Settings.model_fields}
    lines = [
        f"  {name}: unknown setting (known: {', '.join(ENV_PREFIX + f for f in sorted(fields))})"
        for name in sorted(os.environ)
        if name.startswith(ENV_PREFIX)
        and name != f"{ENV_PREFIX}CONFIG"
        and name[len(ENV_PREFIX) :].split("__")[0] not in fields
    ]
    token = _yaml_path.set(yaml_path)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "settings"
            value = f" (got {err['input']!r})" if err["type"] != "missing" and loc else ""
            hint = f"; set {_field_env_name(loc)}" if loc else ""
            lines.append(f"  {where}: {err['msg']}{value}{hint}")
    finally:
        _yaml_path.reset(token)
    if lines:
        source = f" (file {yaml_path})" if yaml_path else ""
        raise SettingsError(f"invalid settings{source}:\n" + "\n".join(lines))
    return settings
