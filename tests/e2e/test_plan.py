"""`selectray plan` against real runs: its counts (usable rows, rows to embed, (row, prompt) pairs to
score, rater requests) equal what the run then does, and a second plan sees the run's caches."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from selectray.pipeline import run
from selectray.plan import make_plan


def test_plan_counts_match_a_kcenter_run_and_then_its_checkpoints(ray_local, tmp_path, make_cfg, demo_pool, monkeypatch):
    monkeypatch.setenv("SELECTRAY_CACHE", str(tmp_path / "cache"))  # a fresh throughput history
    cfg = make_cfg(tmp_path, method="kcenter", budget=12)
    before = make_plan(cfg)
    assert before["input_rows"] == demo_pool["lines"] and before["rejected_by_reason"] == demo_pool["planted"]
    e, k = before["stages"]["embed"], before["stages"]["kcenter"]
    assert (e["cached_rows"], e["rows_to_embed"], e["forward_passes"]) == (0, before["usable_rows"], 0)  # hash: no model
    assert (k["k"], k["reused"]) == (12, False) and before["unknown_stages"] == ["read", "embed", "kcenter"]
    report = run(cfg, quiet=True)
    assert before["usable_rows"] == report["input_rows"] - report["rejected"] == report["stages"]["embed"]["rows"]
    assert before["budget"] == report["selected"] == 12
    after = make_plan(cfg)
    assert after["stages"]["embed"]["cached_rows"] == after["usable_rows"] and after["stages"]["embed"]["work"] == 0
    assert after["stages"]["kcenter"]["reused"] is True and after["stages"]["kcenter"]["seconds"] == 0
    read = after["stages"]["read"]  # the run's own throughput, kept for this hardware
    assert read["rate"] == pytest.approx(report["stages"]["read"]["rows"] / report["stages"]["read"]["seconds"])
    assert "1 earlier run" in read["rate_source"]
    from selectray.commands.plan import describe

    text = describe(after)
    assert f"{after['usable_rows']:,} in embeddings/" in text and "(reused from kcenter/)" in text


def test_plan_counts_match_a_selectit_run(selectit_run, tiny, prompts_for):
    cfg, before, report = selectit_run
    s = before["stages"]["score"]
    (tag,) = s["models"]
    assert before["usable_rows"] == 30 and before["rejected_by_reason"] == {"missing_output": 1}
    assert s["pairs"] == 30 * 5 and s["cached_pairs"] == 0
    assert s["pairs_to_score"] == report["selectit"]["models"][cfg.selectit.models[0].name]["pairs_scored_this_run"]
    assert s["forward_passes"] == int(np.ceil(150 / 8))
    # The sample holds every row of this pool, so its token count is exact: the backend's own count.
    from pathlib import Path

    rows = [json.loads(line) for line in Path(cfg.input[0]).read_text().splitlines()]
    rows = [(r["instruction"], r["input"], r["output"]) for r in rows if r["output"]]
    exact = np.mean(tiny.count_tokens(prompts_for(rows, cfg.selectit.layout)))
    assert s["models"][tag]["tokens_per_pair"] == pytest.approx(exact)
    assert s["models"][tag]["tokens_to_score"] == round(150 * exact)
    again = make_plan(cfg)["stages"]["score"]
    assert again["cached_pairs"] == again["pairs"] == 150 and again["pairs_to_score"] == 0


@pytest.mark.slow
def test_plan_counts_match_a_selectllm_run(selectllm_run):
    cfg, before, report = selectllm_run
    p = before["stages"]["pick"]
    assert before["usable_rows"] == report["input_rows"] - report["rejected"] == 60
    assert p["requests"] == report["selectllm"]["requests"] == 5 and p["candidates_per_request"] == 5
    assert p["prompt_tokens_per_request"] > 0 and p["prompt_tokens"] == round(5 * p["prompt_tokens_per_request"])


def _config_file(tmp_path, demo_pool) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"input": str(demo_pool["path"]), "output": str(tmp_path / "out"), "method": "kcenter",
                                    "budget": 12, "embed": {"model": "hash"}}))
    return str(path)


def test_plan_cli_json_with_a_throughput_file(tmp_path, demo_pool):
    rates = tmp_path / "rates.yaml"
    rates.write_text(yaml.safe_dump({"gpus": False, "rates": {"read": 100, "embed:hash": 50, "kcenter:exact": 1000}}))
    done = subprocess.run([sys.executable, "-m", "selectray", "plan", "--config", _config_file(tmp_path, demo_pool),
                           "--json", "--throughput", str(rates)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    st, n = plan["stages"], plan["usable_rows"]
    assert st["read"]["seconds"] == pytest.approx(demo_pool["lines"] / 100)
    assert st["embed"]["seconds"] == pytest.approx(n / 50) and st["kcenter"]["seconds"] == pytest.approx(n * 12 / 1000)
    assert {s["rate_source"] for s in st.values()} == {"throughput file"}
    assert plan["total_seconds"] == pytest.approx(demo_pool["lines"] / 100 + n / 50 + n * 12 / 1000)
    assert plan["total_gpu_hours"] == 0 and plan["unknown_stages"] == []


def test_plan_cli_bad_throughput_file_is_one_line(tmp_path, demo_pool):
    rates = tmp_path / "rates.yaml"
    rates.write_text("rates: {embed:hash: fast}\n")
    done = subprocess.run([sys.executable, "-m", "selectray", "plan", "--config", _config_file(tmp_path, demo_pool),
                           "--throughput", str(rates)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "positive number" in done.stderr


def test_plan_measure_times_each_stage_here(tmp_path, make_cfg):
    plan = make_plan(make_cfg(tmp_path, method="kcenter", budget=12), measure=True)
    for name in ("read", "embed", "kcenter"):
        st = plan["stages"][name]
        assert st["rate_source"] == "measured now" and st["rate"] > 0
        assert st["seconds"] == pytest.approx(st["work"] / st["rate"])
    assert plan["unknown_stages"] == []
