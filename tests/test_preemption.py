"""Spot notices: the IMDSv2 poller against a local stand-in for the AWS metadata service."""

from __future__ import annotations

import pytest

from infra.storage import Store
from tests.conftest import copy_store
from tests.local_http import LocalService, QuietHandler
from trainer import exit_codes
from trainer.checkpoint import Checkpoints
from trainer.preemption import NoticePoller, StopRequest, spot_notice
from trainer.train import PhaseTrainer


class FakeIMDS(LocalService):
    """IMDSv2 on 127.0.0.1: PUT a token, then GET instance-action with it (404 until a notice)."""

    def __init__(self):
        self.notice: str | None = None
        self.tokenless_reads = 0
        outer = self

        class Handler(QuietHandler):
            def do_PUT(self):
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._reply(200, b"tok123")
                else:
                    self._reply(400, b"")

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "tok123":
                    outer.tokenless_reads += 1
                    return self._reply(401, b"")
                if self.path == "/latest/meta-data/spot/instance-action" and outer.notice:
                    return self._reply(200, outer.notice.encode())
                self._reply(404, b"")

        super().__init__(Handler)


def test_no_notice_until_the_service_schedules_one():
    with FakeIMDS() as imds:
        assert spot_notice(imds.url) is None
        imds.notice = '{"action": "terminate", "time": "2026-11-24T23:00:00Z"}'
        assert "terminate" in spot_notice(imds.url)
        assert imds.tokenless_reads == 0


def test_poller_sets_the_stop_request():
    with FakeIMDS() as imds:
        stop = StopRequest()
        poller = NoticePoller(imds.url, 0.05, stop)
        poller.start()
        imds.notice = '{"action": "stop"}'
        poller._thread.join(timeout=5)
        poller.close()
        assert stop.reason is not None and "stop" in stop.reason


def test_a_spot_notice_makes_the_trainer_checkpoint_and_exit_retryable(preprocessed_store, tmp_path,
                                                                        make_settings):
    with FakeIMDS() as imds:
        settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "store"), run_id="shared", steps=200,
                                 preemption={"imds_url": imds.url, "imds_poll_s": 0.05})
        trainer = PhaseTrainer(settings, 1, progress=False)
        try:
            trainer.setup()
            inner = trainer._batches

            def notice_after_three():
                for i, batch in enumerate(inner):
                    if i == 3:
                        imds.notice = '{"action": "terminate"}'
                    yield batch

            trainer._batches = notice_after_three()
            code = trainer.train()
        finally:
            trainer.cleanup()
    assert code == exit_codes.PREEMPTED
    run = Store.for_run(settings)
    assert Checkpoints(run, "phase1", 3).steps()[-1] == trainer.step < 200


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_set_the_stop_request(sig):
    import os
    import signal

    stop = StopRequest()
    stop.install_signal_handlers()
    try:
        os.kill(os.getpid(), getattr(signal, sig))
        assert stop.reason == f"signal {getattr(signal, sig).value}"
    finally:
        stop.restore_signal_handlers()


def test_the_notice_is_polled_only_on_aws():
    from trainer.preemption import AWS_IMDS, imds_url_for

    assert imds_url_for({"SKYPILOT_CLUSTER_INFO": '{"cloud": "AWS", "region": "us-east-1"}'}) == AWS_IMDS
    assert imds_url_for({"SKYPILOT_CLUSTER_INFO": '{"cloud": "RunPod"}'}) is None
    assert imds_url_for({"SKYPILOT_CLUSTER_INFO": "not json"}) is None
    assert imds_url_for({}) is None
