"""selectray export: each format against a hand-written two-row selection, JSONL and Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectray.errors import SelectrayError
from selectray.export import export_selection, user_turn


@pytest.fixture
def finished(tmp_path):
    """A run folder with the files a finished run leaves: two selected rows (stored out of rank
    order) plus one without a response, and the run's column mapping in report.json."""
    out = tmp_path / "run"
    out.mkdir()
    pq.write_table(pa.table({
        "prompt": ["Translate to French.", "Name a colour.", "Say nothing."],
        "context": ["Good morning", "", None],
        "completion": ["Bonjour", "Red.", None],
        "domain": ["lang", "art", "x"],
        "id": ["b", "a", "c"],
        "rank": [2, 1, 3],
    }), out / "selected.parquet")
    columns = {"instruction": "prompt", "input": "context", "output": "completion", "id": "id"}
    (out / "report.json").write_text(json.dumps({"method": "random", "input": ["pool.jsonl"], "columns": columns}))
    return out


EXPECTED = {
    "alpaca": [
        {"instruction": "Name a colour.", "input": "", "output": "Red.", "id": "a", "rank": 1},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour", "id": "b", "rank": 2},
    ],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Red."}], "id": "a", "rank": 1},
        {"conversations": [{"from": "human", "value": "Translate to French.\n\nGood morning"},
                           {"from": "gpt", "value": "Bonjour"}], "id": "b", "rank": 2},
    ],
    "messages": [
        {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}], "id": "a", "rank": 1},
        {"messages": [{"role": "user", "content": "Translate to French.\n\nGood morning"},
                      {"role": "assistant", "content": "Bonjour"}], "id": "b", "rank": 2},
    ],
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_jsonl_round_trip(finished, tmp_path, fmt):
    path, n, skipped = export_selection(str(finished), fmt, str(tmp_path / f"{fmt}.jsonl"))
    assert (n, skipped) == (2, 1)
    assert [json.loads(line) for line in Path(path).read_text().splitlines()] == EXPECTED[fmt]


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_parquet_round_trip(finished, tmp_path, fmt):
    path, n, _ = export_selection(str(finished), fmt, str(tmp_path / f"{fmt}.parquet"))
    assert n == 2
    assert pq.read_table(path).to_pylist() == EXPECTED[fmt]


def test_default_target_is_in_the_run_folder(finished):
    path, n, _ = export_selection(str(finished), "alpaca")
    assert path == str(finished / "selected.alpaca.jsonl") and n == 2


def test_user_turn_joins_instruction_and_input():
    assert user_turn("Do it.", "the input") == "Do it.\n\nthe input"
    assert user_turn("Do it.", "  ") == "Do it."
    assert user_turn("Do it.", None) == "Do it."


def test_errors_are_user_errors(finished, tmp_path):
    with pytest.raises(SelectrayError, match="unknown export format 'openai'"):
        export_selection(str(finished), "openai")
    with pytest.raises(SelectrayError, match="not a finished selectray run"):
        export_selection(str(tmp_path), "alpaca")
    with pytest.raises(SelectrayError, match="name the file .jsonl or .parquet"):
        export_selection(str(finished), "alpaca", str(tmp_path / "x.csv"))


def test_pool_of_a_run_whose_input_changed_or_moved(finished, tmp_path):
    from selectray.export import FinishedRun

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"r{i}", "instruction": "Q?", "output": "A."}) + "\n" for i in range(3)))
    report = json.loads((finished / "report.json").read_text())
    (finished / "report.json").write_text(json.dumps({**report, "input": [str(pool)], "input_rows": 4}))
    with pytest.raises(SelectrayError, match="changed since the run: 3 rows now, the run read 4"):
        FinishedRun(str(finished)).pool()
    with pytest.raises(SelectrayError, match="give the pool with --pool"):
        FinishedRun(str(finished)).pool([str(tmp_path / "moved.jsonl")])
    (finished / "report.json").write_text(json.dumps({**report, "input": [str(pool)], "input_rows": 3}))
    rows, usable = FinishedRun(str(finished)).pool()
    assert rows.ids == ["r0", "r1", "r2"] and usable.all()  # no rejected.parquet: every row usable
