"""`selectray eval` and `selectray export` on a real finished run (local Ray, hash embedder)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectray.evaluate import comparison_candidates, random_subset
from selectray.export import FinishedRun


def selectray(*args):
    return subprocess.run([sys.executable, "-m", "selectray", *args], capture_output=True, text=True, timeout=600)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


EXTRA = [  # a Parquet input next to the demo pool: one good row, one empty instruction, one reused id
    {"id": "pq-0", "instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"id": "pq-1", "instruction": "  ", "input": "", "output": "Nothing to answer."},
    {"id": "ex-0003", "instruction": "A second row with the id of a demo row.", "input": "", "output": "Rejected."},
]


@pytest.fixture(scope="module")
def finished(ray_local, tmp_path_factory, make_cfg, demo_pool):
    """A random selection of 10 % over a Parquet file plus the demo JSONL pool, also exported as messages."""
    from selectray.pipeline import run

    tmp = tmp_path_factory.mktemp("evalrun")
    extra = tmp / "extra.parquet"
    pq.write_table(pa.Table.from_pylist(EXTRA), extra)
    report = run(make_cfg(tmp, method="random", input=[str(demo_pool["path"]), str(extra)],
                           write={"export": ["messages"]}), quiet=True)
    return tmp / "out", report


def test_pool_rows_are_numbered_as_the_run_numbered_them(finished, demo_pool):
    out, report = finished
    rows, usable = FinishedRun(str(out)).pool()
    assert len(rows) == report["input_rows"] == demo_pool["lines"] + len(EXTRA)
    assert int((~usable).sum()) == report["rejected"]
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    for r in rejected:  # each rejected row sits where rejected.parquet says it was read
        if r["id"] is not None:
            assert rows.ids[r["input_row"]] == r["id"], r
    # The read stage reads Parquet files first: their "ex-0003" is the first of that id, the demo's is the duplicate.
    assert rows.ids[:3] == ["pq-0", "pq-1", "ex-0003"]
    assert usable[0] and not usable[1] and usable[2]
    later = [i for i in range(3, len(rows)) if rows.ids[i] == "ex-0003"]
    assert len(later) == 1 and not usable[later[0]]
    usable_ids = {rows.ids[i] for i in np.flatnonzero(usable)}
    assert set(pq.read_table(out / "selected.parquet")["id"].to_pylist()) <= usable_ids


def test_random_comparison_draws_from_usable_rows_with_a_response(finished, demo_pool):
    out, report = finished
    candidates, _ = comparison_candidates(FinishedRun(str(out)))
    # The random method needs no response, so the 6 planted rows without one are usable but not trainable.
    assert len(candidates) == report["input_rows"] - report["rejected"] - 6
    assert all(o and o.strip() for o in candidates.output)
    assert len(set(candidates.ids)) == len(candidates)  # no duplicate_id row got in
    # (The generator repeats texts under other ids, so a row is its id and its text.)
    rejected = {(r["id"], r["instruction"], r["input"], r["output"]) for r in pq.read_table(out / "rejected.parquet").to_pylist()}
    assert not rejected & set(zip(candidates.ids, candidates.instruction, candidates.input, candidates.output))
    size = report["selected"]
    a, b = (candidates.take(random_subset(len(candidates), size, s)) for s in (0, 1))
    assert len(a) == len(b) == size and a.ids != b.ids


@pytest.fixture(scope="module")
def eval_file(finished, tmp_path_factory):
    """Six new rows, one pool row under a new id, one new row under a pool row's id."""
    from make_pool import make_rows

    rows, _ = FinishedRun(str(finished[0])).pool()
    pool_text = set(zip(rows.instruction, rows.input, rows.output))
    fresh = [r for r in make_rows(60, seed=99) if (r["instruction"], r["input"], r["output"]) not in pool_text][:6]
    assert len(fresh) == 6
    ev = [{**r, "id": f"held-{i}"} for i, r in enumerate(fresh)]
    k = rows.ids.index("ex-0010")
    ev.append({"id": "held-copy", "instruction": rows.instruction[k], "input": rows.input[k], "output": rows.output[k]})
    ev.append({"id": "ex-0020", "instruction": "A new question.", "input": "", "output": "A new answer."})
    path = tmp_path_factory.mktemp("evalfile") / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ev))
    return path


def test_eval_cli_with_a_tiny_model(finished, eval_file, tiny_llama_dir):
    out, report = finished
    proc = selectray("eval", "--selected", str(out), "--eval", str(eval_file), "--model", tiny_llama_dir,
                     "--seeds", "2", "--steps", "3", "--batch-size", "4", "--max-length", "96", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "eval.json").read_text())
    assert r["model"] == tiny_llama_dir and r["eval_file"] == str(eval_file)
    assert (r["eval_rows"], r["dropped_eval_rows"], r["dropped_eval_by_reason"]) == (6, 2, {"in_pool": 2})
    assert r["seeds"] == [0, 1] and r["steps"] == 3 and r["hyper"]["lr"] > 0
    selected = pq.read_table(out / "selected.parquet").to_pylist()
    trainable = sum(1 for s in selected if s["output"] and s["output"].strip())
    assert r["selection"]["rows"] == r["comparison"]["rows"] == trainable
    assert r["selection"]["skipped_rows"] == len(selected) - trainable
    assert r["comparison"]["name"] == "random"
    for part in ("selection", "comparison"):
        assert len(r[part]["loss"]) == 2 and r[part]["mean"] == pytest.approx(sum(r[part]["loss"]) / 2)
    diffs = [a - b for a, b in zip(r["selection"]["loss"], r["comparison"]["loss"])]
    assert r["difference"]["mean"] == pytest.approx(sum(diffs) / 2)
    lo, hi = r["difference"]["ci95"]
    assert lo < r["difference"]["mean"] < hi
    assert r["base_loss"] > 0 and r["seconds"] > 0
    assert "difference" in proc.stdout and "eval.json" in proc.stdout
    # The run's report is rebuilt with the evaluation in it.
    assert json.loads((out / "report.json").read_text())["eval"] == r
    assert "Evaluation (eval.json)" in (out / "report.html").read_text()


def test_eval_against_another_run_with_one_seed(finished, eval_file, tiny_llama_dir, tmp_path):
    out, _ = finished
    other = tmp_path / "other"
    other.mkdir()
    sel = pq.read_table(out / "selected.parquet")
    pq.write_table(sel.slice(0, 5), other / "selected.parquet")
    (other / "report.json").write_text((out / "report.json").read_text())
    proc = selectray("eval", "--selected", str(out), "--against", str(other), "--eval", str(eval_file), "--model",
                     tiny_llama_dir, "--seeds", "1", "--steps", "2", "--batch-size", "4", "--max-length", "96", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "eval.json").read_text())
    assert r["comparison"]["name"] == str(other) and r["comparison"]["rows"] == 5
    assert r["difference"]["ci95"] is None and "one seed" in r["difference"]["note"]
    assert "no interval" in proc.stdout


@pytest.mark.parametrize("args, needles", [
    (["--steps", "0"], ["--steps must be at least 1"]),
    (["--lr", "-1"], ["--lr must be a positive number"]),
    (["--against", "/nonexistent/run"], ["/nonexistent/run is not a finished selectray run"]),
    (["--eval", "/nonexistent/heldout.jsonl"], ["file not found", "heldout.jsonl"]),
    (["--eval", "heldout.csv"], ["cannot tell the format", "heldout.csv"]),
    (["--device", "tpu"], ["--device must be auto, cpu or cuda"]),
])
def test_eval_bad_arguments_are_one_line_errors(finished, eval_file, args, needles):
    base = {"--selected": str(finished[0]), "--eval": str(eval_file), "--model": "smollm2-135m"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    proc = selectray("eval", *[x for kv in base.items() for x in kv])
    assert_one_line_error(proc, *needles)


def test_eval_of_a_folder_that_is_no_run(tmp_path, eval_file):
    assert_one_line_error(selectray("eval", "--selected", str(tmp_path), "--eval", str(eval_file)),
                          "not a finished selectray run")


def test_export_cli(finished, tmp_path):
    out, report = finished
    target = tmp_path / "sel.parquet"
    proc = selectray("export", str(out), "--format", "messages", "--to", str(target))
    assert proc.returncode == 0, proc.stderr
    got = pq.read_table(target).to_pylist()
    selected = [s for s in pq.read_table(out / "selected.parquet").to_pylist() if s["output"] and s["output"].strip()]
    assert [g["id"] for g in got] == [s["id"] for s in selected]
    assert [g["messages"][1]["content"] for g in got] == [s["output"] for s in selected]
    # The run setting `write.export` wrote the same records as the command.
    written = [json.loads(line) for line in (out / "selected.messages.jsonl").read_text().splitlines()]
    assert written == got
    assert_one_line_error(selectray("export", str(out), "--format", "chatml"), "invalid choice", "chatml")
    assert_one_line_error(selectray("export", str(tmp_path), "--format", "alpaca"), "not a finished selectray run")
