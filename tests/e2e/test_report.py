"""The report of real runs: its numbers against the output files, row text shown as text,
`selectray report OUT` rebuilding it without Ray, and `--compare` against set computations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from selectray.report.data import CALC_PATTERN

SCRIPT_TEXT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _selected(out) -> list[dict]:
    return pq.read_table(out / "selected.parquet").to_pylist()


def _report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def _length(row) -> int:
    return sum(len(row.get(f) or "") for f in ("instruction", "input", "output"))


def _calc(row) -> bool:
    return any(re.search(CALC_PATTERN, row.get(f) or "") for f in ("instruction", "input", "output"))


@pytest.mark.parametrize("method", ["length", "kcenter"])
def test_report_numbers_match_the_output_files(report_runs, method):
    out, rows = report_runs[method], report_runs["rows"]
    r, sel = _report(out), _selected(out)
    assert r == json.loads(json.dumps(report_runs[f"{method}_report"], default=str))  # what run() returned
    assert r["selected"] == len(sel) == 8 and r["rejected"] == pq.read_table(out / "rejected.parquet").num_rows == 0
    assert r["input_rows"] == len(rows) == r["selected"] + r["not_selected"] + r["rejected"]
    top = r["selected_rows"]["top"]
    assert [(x["id"], x["rank"]) for x in top] == [(s["id"], s["rank"]) for s in sel]
    ids = [s["id"] for s in sel]
    st = r["statistics"]
    assert st["length_chars"]["pool_mean"] == pytest.approx(np.mean([_length(x) for x in rows]))
    assert st["length_chars"]["selected_mean"] == pytest.approx(np.mean([_length(s) for s in sel]))
    assert st["calculation"]["pool_rows"] == sum(_calc(x) for x in rows) > 0
    assert st["calculation"]["selected_rows"] == sum(_calc(s) for s in sel)
    assert [x["why"]["length"] for x in top] == [_length(s) for s in sel]
    if method == "kcenter":
        centers = sorted(pq.read_table(out / "kcenter" / "centers.parquet").to_pylist(), key=lambda c: c["order"])
        order = {c["id"]: c["order"] for c in centers}
        assert [x["why"]["center_order"] for x in top] == [order[i] for i in ids]
        assert [x["why"]["radius_before"] for x in top[1:]] == [centers[order[i] - 1]["radius"] for i in ids[1:]]
        assign = pq.read_table(out / "kcenter" / "assignment.parquet").to_pylist()
        sizes = np.bincount([a["cluster_id"] for a in assign])
        assert {c["cluster_id"]: c["size"] for c in r["clusters"]} == {c: int(sizes[c]) for c in np.argsort(-sizes, kind="stable")[:8]}
    if method == "kcenter":  # every row has a vector: the map shows them all
        assert r["map"]["points"] == len(rows) and r["coverage"]["pool_embedded"] is True
    else:  # only the coverage figure's rows have one: its pool sample and the selection
        from selectray.coverage import coverage_rows

        pos = {x["id"]: i for i, x in enumerate(rows)}
        cov = coverage_rows(np.array([pos[i] for i in ids]), np.ones(len(rows), bool), 10, 0)
        assert r["map"]["points"] == len(np.union1d(cov.sample, cov.selected)) < len(rows)
        assert r["coverage"]["pool_embedded"] is False
    assert r["map"]["selected"] == 8
    assert set(r["coverage"]) >= {"radius", "random_radius", "mean_distance", "random_mean_distance"}


def test_html_shows_a_selected_rows_markup_as_text(report_runs):
    out = report_runs["length"]
    assert _selected(out)[0]["id"] == "html-row"
    html = (out / "report.html").read_text()
    assert ESCAPED in html and SCRIPT_TEXT not in html
    assert html.count("<script>") == 1  # the page's own few lines
    assert not re.search(r"""(src|href)=['"]?https?:""", html)  # self-contained: nothing from the network


def test_report_command_rebuilds_the_same_numbers_without_ray(report_runs, tmp_path):
    out = report_runs["kcenter"]
    # The rebuild itself imports no Ray at all; the CLI (whose other commands need Ray) starts none.
    code = ("import sys; from selectray.report.assemble import render; from selectray.report.data import read_data; "
            "from selectray.storage import Location; render(Location(sys.argv[2] + '/direct'), read_data(sys.argv[1]), "
            "Location(sys.argv[1])); print('ray imported:', any(m == 'ray' or m.startswith('ray.') for m in sys.modules)); "
            "from selectray.cli import main; rc = main(['report', sys.argv[1], '--output', sys.argv[2]]); "
            "import ray; print('ray started:', ray.is_initialized()); sys.exit(rc)")
    (tmp_path / "direct").mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ray imported: False" in done.stdout and "ray started: False" in done.stdout
    assert _report(tmp_path) == _report(tmp_path / "direct") == _report(out)
    assert (tmp_path / "report.html").read_text().count("<section") == (out / "report.html").read_text().count("<section")


def test_eval_json_is_part_of_the_rebuilt_report(report_runs, tmp_path):
    from selectray.cli import main

    out = tmp_path / "run"
    shutil.copytree(report_runs["length"], out)
    ev = {"model": "smollm2-135m", "eval_rows": 50, "seeds": [0, 1], "base_loss": 2.5,
          "selection": {"name": str(out), "rows": 8, "loss": [2.1, 2.3], "mean": 2.2},
          "comparison": {"name": "random", "rows": 8, "loss": [2.4, 2.4], "mean": 2.4},
          "difference": {"mean": -0.2, "ci95": [-0.5, 0.1]}}
    (out / "eval.json").write_text(json.dumps(ev))
    assert main(["report", str(out)]) == 0
    assert _report(out)["eval"] == ev
    html = (out / "report.html").read_text()
    assert "Evaluation (eval.json)" in html and "[-0.5, 0.1]" in html.replace("–", "-")


def test_compare_overlap_is_the_set_computation(report_runs, tmp_path):
    a_out, b_out = report_runs["length"], report_runs["kcenter"]
    done = subprocess.run([sys.executable, "-m", "selectray", "report", str(a_out), "--compare", str(b_out),
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    c = json.loads((tmp_path / "compare.json").read_text())
    a_ids, b_ids = [s["id"] for s in _selected(a_out)], [s["id"] for s in _selected(b_out)]
    a, b = set(a_ids), set(b_ids)
    (o,) = c["overlap"]
    assert (o["both"], o["only_a"], o["only_b"]) == (len(a & b), len(a - b), len(b - a))
    assert o["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    (d,) = c["differences"]
    assert d["only_a"] == [i for i in a_ids if i not in b] and d["only_b"] == [i for i in b_ids if i not in a]
    assert c["same_pool"] is True and [r["method"] for r in c["runs"]] == ["length", "kcenter"]
    assert [r["selected"] for r in c["runs"]] == [8, 8]
    html = (tmp_path / "compare.html").read_text()
    assert html.count("<script>") == 1 and SCRIPT_TEXT not in html
    if "html-row" in a - b:
        assert ESCAPED in html


def test_report_of_a_folder_without_a_run_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "selectray", "report", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "report_data" in done.stderr


def test_selectit_report_explains_with_the_scores(selectit_run):
    cfg, _, report = selectit_run
    out = cfg.output_dir
    r, sel = _report(out), {s["id"]: s for s in _selected(out)}
    assert r["rejected_by_reason"] == {"missing_output": 1} and r["selected"] == len(sel) == 6
    model = cfg.selectit.models[0].name
    from selectray.stages.validate import content_hash

    (folder,) = (out / "scores").iterdir()  # the mass outside 1-5, averaged over the run's prompts, per row
    prompts = json.loads((folder / "_manifest.json").read_text())["prompts"]
    cache = [e for f in sorted(folder.glob("*.parquet")) for e in pq.read_table(f).to_pylist() if e["prompt_hash"] in prompts]
    p_other = {h: np.mean([e["p_other"] for e in cache if e["row_hash"] == h]) for h in {e["row_hash"] for e in cache}}
    for x in r["selected_rows"]["top"]:
        row = sel[x["id"]]
        assert x["rank"] == row["rank"]
        assert x["why"]["score_model"] == pytest.approx(row["score_model"], abs=0)
        assert x["why"][f"score_sentence_{model}"] == pytest.approx(row[f"score_sentence_{model}"], abs=0)
        assert [x["why"][f"score_token_{model}_p{k}"] for k in range(5)] == [row[f"score_token_{model}_p{k}"] for k in range(5)]
        assert x["why"][f"p_other_{model}"] == pytest.approx(p_other[content_hash(row["instruction"], row["input"], row["output"])])
    assert r["statistics"]["score_model"]["selected_mean"] == pytest.approx(np.mean([s["score_model"] for s in sel.values()]))


@pytest.mark.slow
def test_selectllm_report_explains_with_the_rater(selectllm_run):
    from selectray.prompts import parse_selection

    cfg, _, report = selectllm_run
    out = cfg.output_dir
    sel = {s["id"]: s for s in _selected(out)}
    groups = pq.read_table(out / "report_data" / "groups.parquet").to_pylist()
    pos_of = {r["id"]: r["pos"] for r in pq.read_table(out / "report_data" / "rows.parquet").to_pylist()}
    id_of = {p: i for i, p in pos_of.items()}
    assert len(groups) == report["selectllm"]["requests"]
    for x in _report(out)["selected_rows"]["top"]:
        w, row = x["why"], sel[x["id"]]
        assert w["group_id"] == row["group_id"] and w["picked_by"] == row["picked_by"]
        g = groups[w["group_id"]]
        assert w["answer"] == g["answer"] and pos_of[x["id"]] in g["candidates"]
        assert sorted(w["beaten"]) == sorted(id_of[p] for p in g["candidates"] if p != pos_of[x["id"]])
        if w["picked_by"] == "rater":  # the rater's answer names this row
            picked = parse_selection(g["answer"], len(g["candidates"]), cfg.selectllm.picks)
            assert g["candidates"][picked[0]] == pos_of[x["id"]]
