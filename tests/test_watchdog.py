"""Stalls and transient errors: a hanging S3 endpoint and one that fails N times, on 127.0.0.1.

A transient error is retried inside the process; a hang is ended by a timeout or, in training,
by the watchdog, which checkpoints what it safely can and exits with the retryable STALLED code,
so the managed job resumes instead of paying for a stuck GPU.
"""

from __future__ import annotations

import re
import threading

import pytest

from infra.settings import StorageSettings, load_settings
from infra.storage import Store, StoreError, with_retries
from tests.conftest import BUCKET, PYTHON, copy_store, subprocess_env, tiny_plan
from tests.faulty_s3 import FaultyS3
from tests.supervisor import Supervisor
from trainer import exit_codes
from trainer.checkpoint import Checkpoints
from trainer.train import PhaseTrainer
from trainer.watchdog import Watchdog


def test_throttling_answers_are_retried_until_the_request_succeeds(s3_endpoint, tmp_path):
    with FaultyS3(s3_endpoint) as net:
        store = Store(f"s3://{BUCKET}/retry-{tmp_path.name}", net.url)
        net.fail_next = 3
        store.put_bytes("a.bin", b"payload")
        net.fail_next = 2
        assert store.get_bytes("a.bin") == b"payload"
    assert net.failed == 5


def test_a_hanging_endpoint_ends_in_an_error_after_the_configured_attempts(s3_endpoint, tmp_path):
    limits = StorageSettings(connect_timeout_s=1, read_timeout_s=0.5, max_attempts=2)
    with FaultyS3(s3_endpoint) as net:
        store = Store(f"s3://{BUCKET}/hang-{tmp_path.name}", net.url, limits)
        net.hang = True
        with pytest.raises((StoreError, OSError)):
            store.get_bytes("nothing-answers.bin")
        assert len(net.requests) >= 2  # retried, then given up: the job does not hang


def test_with_retries_backs_off_then_succeeds_or_raises_the_last_error():
    waits: list[float] = []
    calls = iter([OSError("reset"), OSError("reset"), "ok"])

    def flaky():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert with_retries(flaky, "hub download", attempts=3, sleep=waits.append) == "ok"
    assert len(waits) == 2 and waits[1] > waits[0] * 0.99 / 3  # grows (with jitter)
    with pytest.raises(OSError, match="still down"):
        with_retries(lambda: (_ for _ in ()).throw(OSError("still down")), "x", attempts=2, sleep=waits.append)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_read_that_hangs_between_steps_gets_an_emergency_checkpoint_and_the_retryable_exit(
        preprocessed_store, tmp_path, make_settings, s3_endpoint):
    settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "store"), run_id="shared", steps=50,
                             train={"checkpoint_every": 4})
    clock = FakeClock()
    exits: list[int] = []
    with FaultyS3(s3_endpoint) as net:
        net.hang = True
        hanging = Store(f"s3://{BUCKET}/data-{tmp_path.name}", net.url,
                        StorageSettings(read_timeout_s=3600, max_attempts=1))
        trainer = PhaseTrainer(settings, 1, progress=False)

        def stalled(code: int) -> None:
            exits.append(code)
            net.heal()  # lets the stuck read fail, so this test's thread can finish

        trainer.watchdog = Watchdog(60, trainer._emergency_checkpoint, clock=clock, poll_s=0.02, exit=stalled)
        try:
            trainer.setup()
            inner = trainer._batches

            def six_then_a_hung_read():
                for i, batch in enumerate(inner):
                    if i == 6:
                        hanging.get_bytes("shard.mds")  # never answered
                    yield batch

            trainer._batches = six_then_a_hung_read()
            waker = threading.Thread(target=lambda: (net.hung.wait(), setattr(clock, "now", 61.0)), daemon=True)
            waker.start()
            with pytest.raises((StoreError, OSError)):
                trainer.train()
        finally:
            trainer.cleanup()
    assert exits == [exit_codes.STALLED]
    run = Store.for_run(settings)
    assert Checkpoints(run, "phase1", 3).steps()[-1] == 6  # saved at the last finished step, not 4

    (tmp_path / "restored").mkdir()
    saved = Checkpoints(run, "phase1", 3).restore_latest(tmp_path / "restored").state
    assert saved["step"] == 6 and saved["loader"]["used"] == trainer._position["used"]


def test_the_watchdog_stays_quiet_while_steps_keep_coming():
    clock = FakeClock()
    fired: list[int] = []
    dog = Watchdog(10, lambda: None, clock=clock, poll_s=0.01, exit=fired.append)
    dog.start()
    try:
        for _ in range(50):
            clock.now += 9  # every step takes 9 of the 10 allowed seconds
            dog.progress()
        assert not dog.fired.wait(0.1)
    finally:
        dog.close()
    assert fired == []


def upload_store(local_url: str, store: Store) -> None:
    local = Store(local_url)
    for key in local.list():
        store.put_bytes(key, local.get_bytes(key))


# Two whole training runs of a subprocess trainer plus a stall: minutes, so `make test-slow`. The
# in-process test above drives the same watchdog path (hang -> emergency checkpoint -> STALLED) quickly.
@pytest.mark.slow
def test_a_write_that_hangs_ends_the_attempt_stalled_and_the_recovered_job_ends_in_the_same_adapter(
        preprocessed_store, tmp_path, cache_dir, s3_endpoint):
    steps, every = 14, 5

    def settings_at(endpoint: str, prefix: str):
        return load_settings(store=f"s3://{BUCKET}/{prefix}", s3_endpoint_url=endpoint, run_id="shared",
                             cache_dir=cache_dir, logging={"wandb_mode": "disabled", "val_every": 0},
                             train={"phases": tiny_plan(steps), "checkpoint_every": every, "log_every": 1,
                                    "stall_timeout_s": 15})

    cmd = [PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"]
    reference = settings_at(s3_endpoint, f"ref-{tmp_path.name}")
    upload_store(preprocessed_store, Store.from_settings(reference))
    assert Supervisor(cmd, subprocess_env(reference), exit_codes.RETRYABLE).run().returncode == 0

    with FaultyS3(s3_endpoint) as net:
        chaos = settings_at(net.url, f"chaos-{tmp_path.name}")
        upload_store(preprocessed_store, Store.from_settings(chaos))
        sup = Supervisor(cmd, subprocess_env(chaos, SUARA_STORAGE__READ_TIMEOUT_S="3600"), exit_codes.RETRYABLE)
        attempts, hung_in = [], []

        def break_the_network(line: str) -> None:
            # Once step 7 is logged, every request hangs (the next is step 10's checkpoint upload).
            if not hung_in and "phase1 step 7/" in line:
                net.hang = True
                hung_in.append(len(attempts))

        # A managed job: retryable exits are restarted. On a slow machine an attempt may also stall
        # before the network breaks; that is recovered the same way and changes nothing below.
        while not attempts or attempts[-1].returncode in exit_codes.RETRYABLE:
            assert len(attempts) < 8, [a.returncode for a in attempts]
            attempts.append(sup.attempt(on_line=break_the_network))
            if hung_in:
                net.heal()
    hung, recovered = attempts[hung_in[0]], attempts[hung_in[0] + 1]
    assert hung.returncode == exit_codes.STALLED and "no progress for" in hung.stderr, hung.stderr[-3000:]
    assert attempts[-1].returncode == 0, attempts[-1].stderr[-3000:]
    resumed = re.search(r"resumed phase1 from step (\d+)", recovered.stderr)
    assert resumed and 5 <= int(resumed.group(1)) <= 7  # the last checkpoint before the network broke
    key = "runs/shared/adapters/phase1/adapter_model.safetensors"
    chaos_direct = settings_at(s3_endpoint, f"chaos-{tmp_path.name}")  # the faulty network is gone
    assert Store.from_settings(chaos_direct).get_bytes(key) == Store.from_settings(reference).get_bytes(key)
