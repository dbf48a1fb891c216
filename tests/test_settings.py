"""Settings: typed, read once, every mistake named with the variable that fixes it."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_local_run_with_the_seed_phase_plan():
    s = load_settings()
    assert s.model == "tiny" and s.codec == "tiny"
    assert s.store.startswith("file:///")
    assert [s.train.phases[p].lr for p in (1, 2, 3, 4)] == [2e-4, 1.5e-4, 1e-4, 1e-4]
    assert s.train.grad_clip == 0.3 and s.train.lora.r == 16
    assert all(plan.batch_size == 4 for plan in s.train.phases.values())


def test_one_nested_field_from_the_environment_keeps_the_rest_of_the_phase(monkeypatch):
    monkeypatch.setenv("SUARA_TRAIN__PHASES__2__LR", "5e-5")
    s = load_settings()
    assert s.train.phases[2].lr == 5e-5
    assert s.train.phases[2].max_steps == 2000  # from the seed plan, not lost


def test_yaml_file_then_environment_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "suara.yaml"
    cfg.write_text("run_id: from-file\nseed: 7\ntrain:\n  phases:\n    3: {max_steps: 9, warmup_steps: 1}\n")
    monkeypatch.setenv("SUARA_SEED", "8")
    s = load_settings(cfg)
    assert (s.run_id, s.seed, s.train.phases[3].max_steps, s.train.phases[3].lr) == ("from-file", 8, 9, 1e-4)
    assert load_settings(cfg, seed=9).seed == 9
    monkeypatch.setenv("SUARA_CONFIG", str(cfg))
    assert load_settings().run_id == "from-file"


def test_typo_in_environment_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("SUARA_SEEDD", "3")
    with pytest.raises(SettingsError, match="SUARA_SEEDD: unknown setting"):
        load_settings()


def test_typo_in_file_and_bad_values_are_reported_together(tmp_path, monkeypatch):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  grad_clp: 1.0\n")
    monkeypatch.setenv("SUARA_SEED", "abc")
    monkeypatch.setenv("SUARA_TRAIN__PHASES__1__LR", "-1")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    text = str(err.value)
    assert "train.grad_clp: Extra inputs are not permitted" in text
    assert "seed:" in text and "SUARA_SEED" in text
    assert "train.phases.1.lr" in text and "SUARA_TRAIN__PHASES__1__LR" in text


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("store", "gs://bucket/x", "only file:// directories and s3://"),
    ("store", "s3://", "no bucket"),
    ("run_id", "bad id with spaces", "run_id"),
    ("s3_endpoint_url", "localhost:9000", r"not an http\(s\) URL"),
])
def test_bad_values_name_the_field(field, value, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(**{field: value})


def test_real_model_with_tiny_codec_is_refused():
    with pytest.raises(SettingsError, match="do not fit together"):
        load_settings(model="sesame/csm-1b")


def test_relative_file_store_is_resolved_to_an_absolute_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(store="file://rel/store").store == f"file://{tmp_path}/rel/store"
