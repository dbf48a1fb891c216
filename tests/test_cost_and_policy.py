"""Cost estimate before launch, the IAM policy and the lifecycle rules for the store."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from infra.cost import PRICES, THROUGHPUT, CostError, check_cap, estimate, load_prices
from infra.iam import OBJECT_ACTIONS, iam_policy, lifecycle_rules
from infra.launch import pipeline_max_hourly_cost
from infra.settings import load_settings
from tests.conftest import PYTHON, REPO
from tests.test_cloud_files import GPUS_24GB


def test_price_and_throughput_tables_are_dated_sourced_and_cover_the_24gb_gpus():
    prices = yaml.safe_load(PRICES.read_text())
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    assert prices["date"] and set(prices["sources"]) == set(prices["prices"]) == {"aws", "runpod", "vast", "lambda"}
    gpus = {gpu for table in prices["prices"].values() for gpu in table}
    assert gpus <= GPUS_24GB and set(throughput["seconds_per_step"]) == GPUS_24GB
    assert all(p["spot"] is None for p in prices["prices"]["lambda"].values())  # Lambda has no spot
    assert throughput["source"]


def test_estimate_is_steps_times_step_time_times_price_cheapest_first():
    settings = load_settings()
    estimates = estimate(settings, audio_hours=20, speakers=2)
    assert [e.usd for e in estimates] == sorted(e.usd for e in estimates)
    cheapest = estimates[0]
    steps = 3000 + 2000 + 1000 + 2 * 500
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    expected_hours = (5 * throughput["task_overhead_hours"] + 20 * throughput["preprocess_hours_per_audio_hour"]
                      + steps * cheapest.option.seconds_per_step / 3600)
    assert cheapest.hours == pytest.approx(expected_hours)
    assert cheapest.usd == pytest.approx(expected_hours * cheapest.option.hourly_usd)


def test_an_override_file_changes_prices(tmp_path):
    override = tmp_path / "prices.yaml"
    override.write_text("date: '2027-01-01'\nprices:\n  vast:\n    RTX4090: {spot: 0.01, on_demand: 0.02}\n")
    prices = load_prices(override)
    best = estimate(load_settings(), 20, 2, prices)[0]
    assert (best.option.cloud, best.option.accelerator, best.option.hourly_usd) == ("vast", "RTX4090", 0.01)
    assert prices["date"] == "2027-01-01"


def test_over_the_cap_is_refused_saying_by_how_much():
    estimates = estimate(load_settings(), 20, 2)
    cap = estimates[0].usd - 0.25
    with pytest.raises(CostError, match=r"\$0\.25 over the"):
        check_cap(estimates, cap)
    check_cap(estimates, estimates[0].usd + 1)


def test_hourly_limit_of_the_pipeline_filters_options():
    limit = pipeline_max_hourly_cost(REPO / "sky" / "pipeline.yaml")
    assert limit == 1.10
    assert all(e.option.hourly_usd <= 0.2 for e in estimate(load_settings(), 20, 2, max_hourly_usd=0.2))


def test_cost_cli_prints_the_table_and_exits_nonzero_over_the_cap():
    ok = subprocess.run([PYTHON, "-m", "infra", "cost", "--audio-hours", "30"], capture_output=True, text=True,
                        cwd=REPO)
    assert ok.returncode == 0 and "cheapest first" in ok.stdout and "RTX" in ok.stdout
    env = {"SUARA_BUDGET__MAX_COST_USD": "0.01", "PATH": "/usr/bin:/bin"}
    over = subprocess.run([PYTHON, "-m", "infra", "cost"], capture_output=True, text=True, cwd=REPO, env=env)
    assert over.returncode == 2 and "over the $0.01 cap" in over.stderr


def test_iam_policy_grants_only_the_store_prefix_and_read_only_raw_data():
    policy = iam_policy("s3://bkt/suara", raw_input="s3://bkt/raw")
    json.dumps(policy)  # valid JSON
    assert policy["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["ReadWriteStore"]["Action"] == OBJECT_ACTIONS
    assert by_sid["ReadWriteStore"]["Resource"] == "arn:aws:s3:::bkt/suara/*"
    assert by_sid["ListStorePrefix"]["Condition"]["StringLike"]["s3:prefix"] == ["suara", "suara/*"]
    assert by_sid["ReadRawCorpus"]["Action"] == ["s3:GetObject"]
    everything = [a for s in policy["Statement"] for a in s["Action"]]
    assert not any(a.endswith("*") for a in everything)
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    with pytest.raises(ValueError):
        iam_policy("file:///tmp/x")


def test_lifecycle_rules_expire_only_checkpoints_of_named_runs():
    rules = lifecycle_rules("s3://bkt/suara", ["run1", "run2"], checkpoint_days=14)["Rules"]
    prefixes = {r["Filter"]["Prefix"]: r for r in rules}
    assert prefixes["suara/runs/run1/checkpoints/"]["Expiration"] == {"Days": 14}
    assert "suara/runs/run2/checkpoints/" in prefixes
    assert prefixes["suara/"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert not any("adapters" in p or "/data" in p for p in prefixes)


def test_launch_refuses_over_the_cap_before_calling_skypilot(monkeypatch, capsys):
    import infra.launch as launch_mod

    monkeypatch.setattr(launch_mod, "enabled_clouds", lambda: ["AWS"])  # the cloud edge
    called = []
    monkeypatch.setattr(launch_mod.subprocess, "call", lambda cmd: called.append(cmd) or 0)
    shell = {"SUARA_RUN_ID": "r1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "HF_TOKEN": "x"}
    common = {"store": "s3://bkt/suara", "run_id": "r1", "image": "ghcr.io/acme/suara:abc1234"}
    settings = load_settings(**common, budget={"max_cost_usd": 0.05})
    with pytest.raises(CostError, match="over the \\$0.05 cap"):
        launch_mod.launch(REPO / "sky" / "pipeline.yaml", settings, "s3://bkt/raw/", shell)
    assert called == []
    settings = load_settings(**common, budget={"max_cost_usd": 100.0})
    assert launch_mod.launch(REPO / "sky" / "pipeline.yaml", settings, "s3://bkt/raw/", shell) == 0
    cmd = called[0]
    assert not any(a.startswith("SUARA_BUDGET__HOURLY_PRICE_USD=") for a in cmd)  # the YAML's price stands
    assert "SUARA_BUDGET__MAX_COST_USD=100.0" in cmd and "HF_TOKEN" in cmd
    out = capsys.readouterr().out
    assert "Cost estimate" in out and "jobs controller" in out and "runpod" not in out  # enabled clouds only
