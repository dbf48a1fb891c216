"""Multi-node preprocessing, ranks as processes: the merge runs exactly once however the ranks
finish, and a recovered node does not redo a rank that finished."""

from __future__ import annotations

import subprocess

from infra.storage import Store
from tests.conftest import PYTHON, small_corpus, subprocess_env

IDS = ["ms_001_01", "ms_003_01", "en_001_01", "cs_001_01", "cs_002_02", "pa_001_01", "pa_002_02"]
MERGED = "data manifest:"  # printed only by the process that merged


def ranks(corpus, env, world: int, which: list[int]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([PYTHON, "-m", "preprocess", "run", "--input", str(corpus), "--no-progress"],
                              env={**env, "SKYPILOT_NODE_RANK": str(r), "SKYPILOT_NUM_NODES": str(world),
                                   "SUARA_PREPROCESS__WORKERS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in which]
    outs = [(p, *p.communicate(timeout=600)) for p in procs]
    assert all(p.returncode == 0 for p, _, _ in outs), [err[-1500:] for _, _, err in outs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, out, err in outs]


def test_three_ranks_at_once_merge_exactly_once(tmp_path, make_settings):
    corpus = small_corpus(tmp_path / "corpus", IDS)
    settings = make_settings()
    done = ranks(corpus, subprocess_env(settings), 3, [0, 1, 2])
    assert sum(MERGED in p.stdout for p in done) == 1
    manifest = Store.for_run(settings).get_json("data/manifest.json")
    assert manifest["world_size"] == 3 and manifest["totals"]["samples"] == len(IDS)


def test_a_recovered_node_skips_its_finished_rank_and_the_last_rank_merges(tmp_path, make_settings):
    corpus = small_corpus(tmp_path / "corpus", IDS)
    settings = make_settings()
    env = subprocess_env(settings, SKYPILOT_TASK_ID="sky-managed-1_suara-preprocess")  # one managed job
    run_store = Store.for_run(settings)
    first = ranks(corpus, env, 3, [0, 1])
    assert not any(MERGED in p.stdout for p in first) and not run_store.exists("data/manifest.json")
    marker = run_store.get_bytes("data/_ranks/rank_001.json")

    (again,) = ranks(corpus, env, 3, [1])  # node 1 was preempted after finishing, and recovered
    assert "already finished" in again.stderr and MERGED not in again.stdout
    assert run_store.get_bytes("data/_ranks/rank_001.json") == marker  # not redone

    (last,) = ranks(corpus, env, 3, [2])
    assert MERGED in last.stdout
    assert run_store.get_json("data/manifest.json")["totals"]["samples"] == len(IDS)

    # A new launch (another job id) for the same run and input rebuilds the rank: its settings or
    # audio may have changed since.
    (relaunched,) = ranks(corpus, {**env, "SKYPILOT_TASK_ID": "sky-managed-2_suara-preprocess"}, 3, [1])
    assert "already finished" not in relaunched.stderr
    assert run_store.get_json("data/_ranks/rank_001.json")["job"] == "sky-managed-2_suara-preprocess"
