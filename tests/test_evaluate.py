"""`python -m trainer evaluate`: the pipeline and the report's contents (the tiny model speaks noise,
so the values are not what is tested), best checkpoints, and the listening test without a browser."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from infra.storage import Store
from tests.conftest import PYTHON, copy_store, subprocess_env, train_phase

PROMPTS = "malay: [Selamat pagi semua.]\ncode_switched: [Saya nak go to the kedai.]\nparticle_lah: [Okay lah, I go.]\n"


@pytest.fixture(scope="module")
def evaluated(preprocessed_store, tmp_path_factory, cache_dir):
    """Phases 1 and 2 trained for 2 steps and evaluated (phase 1 in-process, phase 2 by the CLI)."""
    from infra.settings import load_settings
    from trainer.evaluate import evaluate

    root = tmp_path_factory.mktemp("eval")
    prompts = root / "prompts.yaml"
    prompts.write_text(PROMPTS)
    store = copy_store(preprocessed_store, root / "store")
    settings = load_settings(store=store, cache_dir=cache_dir, run_id="shared",
                             train={"phases": {str(p): {"lr": 2e-3, "max_steps": 2, "warmup_steps": 0}
                                               for p in (1, 2, 3, 4)}, "checkpoint_every": 2},
                             logging={"wandb_mode": "disabled", "val_every": 0},
                             evaluation={"prompts": str(prompts), "test_utterances": 1, "max_seconds": 0.6})
    for phase in (1, 2):
        train_phase(settings, phase)
    first = evaluate(settings, 1, progress=False)
    env = subprocess_env(settings, SUARA_EVALUATION__PROMPTS=str(prompts), SUARA_EVALUATION__TEST_UTTERANCES="1",
                         SUARA_EVALUATION__MAX_SECONDS="0.6")
    out = subprocess.run([PYTHON, "-m", "trainer", "evaluate", "--phase", "2", "--no-progress"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return settings, first, out.stdout, env


def test_summary_has_metrics_per_category_and_the_particle_check(evaluated):
    settings, first, _, _ = evaluated
    run = Store.for_run(settings)
    summary = run.get_json("eval/phase1/summary.json")
    assert summary["phase"] == 1 and summary["adapter_steps"] == 2
    categories = summary["categories"]
    assert {"malay", "code_switched", "particle_lah"} <= set(categories)
    tested = [u for u in summary["utterances"] if u["kind"] == "test"]
    assert tested and {"particle", "code_switched"} & {u["category"] for u in tested}
    for row in tested:  # noise or not, a generated clip is measured against its reference
        assert "error" in row or {"mcd_db", "voicing_error", "duration_ratio"} <= set(row)
    lah = [p for u in summary["utterances"] if u["category"] == "particle_lah" for p in u.get("particles", [])]
    assert lah and lah[0]["particle"] == "lah" and lah[0]["expected_shape"] == ["rise_fall"]
    assert "lah" in summary["particles"]


def test_report_has_tables_plots_audio_and_compares_phases(evaluated):
    settings, _, stdout, _ = evaluated
    run = Store.for_run(settings)
    page = run.get_bytes("eval/phase2/report.html").decode()
    assert "Metrics per category" in page and "planning target" in page
    assert "Phase over phase" in page and re.search(r"<tr><td>1</td><td>2</td>", page)  # phase 1 row
    assert len(re.findall(r"data:image/png;base64,", page)) >= 3
    assert "alt='particle_contours'" in page and "alt='phase_over_phase'" in page
    assert len(re.findall(r"<audio controls", page)) >= 3
    wavs = run.list("eval/phase2/audio")
    assert any(k.endswith("prompt_particle_lah_00.wav") for k in wavs)
    assert any(k.endswith(".ref.wav") for k in wavs)
    assert "report: " in stdout and "eval/phase2/report.html" in stdout


def test_the_packaged_prompts_cover_every_category_and_particle():
    from preprocess.prosody import load_table
    from trainer.evaluate import load_prompts

    prompts = load_prompts()
    assert {"malay", "english", "code_switched"} <= set(prompts)
    expected = {p for p, e in load_table().particles.items() if e.shapes}
    assert {f"particle_{p}" for p in expected} <= set(prompts)


def test_a_bad_prompts_file_is_refused_with_its_name(tmp_path):
    from trainer.evaluate import load_prompts

    bad = tmp_path / "p.yaml"
    bad.write_text("malay: [ok, '']\n")
    with pytest.raises(ValueError, match=r"p.yaml: category 'malay' must be a list of non-empty sentences"):
        load_prompts(bad)


def test_best_checkpoints_by_validation_loss_survive_pruning(store_with_data, make_settings, tmp_path):
    from trainer.checkpoint import Checkpoints

    settings = make_settings(store=store_with_data, run_id="shared", steps=8,
                             train={"keep_last_checkpoints": 1, "keep_best_checkpoints": 2},
                             logging={"val_batches": 1})
    train_phase(settings, 1, checkpoint_every=2)
    run = Store.for_run(settings)
    ckpts = Checkpoints(run, "phase1", 1, 2, "val_loss")
    best = ckpts.best()
    assert len(best) == 2 and best[0]["value"] <= best[1]["value"]
    assert set(ckpts.steps()) == {8} | {e["step"] for e in best}  # last 1 + best 2, the rest pruned
    state = run.get_json(f"checkpoints/phase1/step_{best[0]['step']:06d}/state.json")
    assert state["score"] == {"metric": "val_loss", "value": best[0]["value"]}

    env = subprocess_env(settings)
    out = subprocess.run([PYTHON, "-m", "trainer", "pull", "--phase", "1", "--best", "--to", str(tmp_path / "b")],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"step {best[0]['step']}" in out.stdout and (tmp_path / "b" / "adapter_model.safetensors").is_file()
    listing = subprocess.run([PYTHON, "-m", "trainer", "adapters"], env=env, capture_output=True, text=True)
    assert f"phase1 best by val_loss: #1 step {best[0]['step']}" in listing.stdout
    missing = subprocess.run([PYTHON, "-m", "trainer", "pull", "--phase", "2", "--best", "--to", str(tmp_path / "c")],
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "no best checkpoint #1 by val_loss for phase2" in missing.stderr


def test_best_k_keeps_the_lowest_scores_and_prunes_the_rest(tmp_path):
    from trainer.checkpoint import Checkpoints

    run = Store(f"file://{tmp_path}/store")
    ckpts = Checkpoints(run, "phase1", keep_last=1, keep_best=2, metric="mcd")
    for step, score in [(1, 7.0), (2, 5.0), (3, 6.0), (4, 8.0), (5, 9.0)]:
        local = tmp_path / f"c{step}"
        local.mkdir()
        (local / "state.json").write_text("{}")
        ckpts.save(step, local, score=score)
    assert [e["step"] for e in ckpts.best()] == [2, 3]
    assert ckpts.steps() == [2, 3, 5]
    assert Checkpoints(run, "phase1", 1, 2, "val_loss").best() == []  # ranked by another metric


# -- the listening test without a browser ---------------------------------------------------------------
@pytest.fixture
def listening(evaluated, tmp_path):
    from fastapi.testclient import TestClient

    from trainer.listen import Test, app, collect

    settings = evaluated[0]
    run = Store.for_run(settings)
    systems = collect(run, [1, 2], ["reference"])
    test = Test(systems, tmp_path / "ratings.sqlite", b"k" * 16)
    return test, TestClient(app(test, run)), tmp_path / "ratings.sqlite"


def test_trials_are_blind_and_cover_every_clip_and_pair(listening):
    test, client, _ = listening
    systems = test.systems
    mos = sum(len(v) for v in systems.values())
    pairs = sum(len(set(systems[a]) & set(systems[b])) for a in systems for b in systems if a < b)
    nxt = client.get("/api/next", params={"rater": "ana"}).json()
    assert nxt["total"] == mos + pairs and nxt["rated"] == 0
    page = client.get("/").text
    body = json.dumps(nxt)
    assert not any(name in body for name in ("phase1", "phase2", "reference", "prompt_", "test_"))
    audio = client.get(nxt["trial"]["audio"][0])
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert "listening test" in page
    other = client.get("/api/next", params={"rater": "ben"}).json()
    orders = [t.id for t in test.order("ana")], [t.id for t in test.order("ben")]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1] and other["total"] == nxt["total"]


def test_every_answer_is_a_row_and_bad_answers_are_refused(listening):
    import sqlite3

    test, client, db = listening
    seen = 0
    while True:
        nxt = client.get("/api/next", params={"rater": "ana"}).json()
        if nxt["done"]:
            break
        trial = nxt["trial"]
        body = {"rater": "ana", "trial": trial["id"]}
        body.update({"score": 4} if trial["kind"] == "mos" else {"choice": "A"})
        assert client.post("/api/rate", json=body).status_code == 200
        assert client.post("/api/rate", json=body).status_code == 409  # once per rater and trial
        seen += 1
    assert seen == nxt["total"] == nxt["rated"]
    rows = sqlite3.connect(db).execute("SELECT rater, kind, sample, system, score, time FROM ratings").fetchall()
    assert len(rows) == seen and all(r[0] == "ana" and r[5] > 0 for r in rows)
    trial = client.get("/api/next", params={"rater": "cy"}).json()["trial"]
    bad = {"mos": {"score": 6}, "ab": {"choice": "C"}}[trial["kind"]]
    assert client.post("/api/rate", json={"rater": "cy", "trial": trial["id"], **bad}).status_code == 400
    assert client.post("/api/rate", json={"rater": "cy", "trial": "nope", "score": 3}).status_code == 400
    assert client.get("/api/next", params={"rater": "  "}).status_code == 400


def test_summary_gives_mos_confidence_intervals_and_a_sign_test(tmp_path):
    from trainer.listen import Test, format_summary, summarize

    systems = {"phase2": {f"u{i}": "k" for i in range(10)}, "phase3": {f"u{i}": "k" for i in range(10)}}
    test = Test(systems, tmp_path / "r.sqlite", b"s" * 16)
    for rater in ("a", "b"):
        for trial in test.order(rater):
            if trial.kind == "mos":
                test.rate(rater, trial.id, score=4 if trial.systems[0] == "phase3" else 2 + (trial.sample == "u0"))
            else:  # phase3 always preferred, whichever side it was shown on
                test.rate(rater, trial.id, choice="A" if trial.systems[0] == "phase3" else "B")
    summary = summarize(tmp_path / "r.sqlite")
    p3, p2 = summary["mos"]["phase3"], summary["mos"]["phase2"]
    assert p3["n"] == 20 and p3["mean"] == 4 and p3["ci95"] == [4, 4]
    assert p2["mean"] == pytest.approx(2.1) and p2["ci95"][0] < 2.1 < p2["ci95"][1]
    # 95 % CI of 18 twos and 2 threes: t(0.975, 19) * sd / sqrt(20)
    assert p2["ci95"][1] - 2.1 == pytest.approx(2.093 * 0.3078 / 20**0.5, rel=1e-3)
    (pair,) = summary["ab"]
    assert (pair["a"], pair["b"], pair["a_wins"], pair["b_wins"]) == ("phase2", "phase3", 0, 20)
    assert pair["p_value"] == pytest.approx(2 * 0.5**20) and pair["preferred"] == "phase3"
    text = format_summary(summary)
    assert "phase3       4.00  [4.00, 4.00]" in text and "phase3 preferred" in text


def test_listen_refuses_phases_without_an_evaluation(evaluated, tmp_path):
    env = evaluated[3]
    out = subprocess.run([PYTHON, "-m", "trainer", "listen", "--phases", "3", "--db", str(tmp_path / "x.sqlite")],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "run `python -m trainer evaluate --phase 3` first" in out.stderr
