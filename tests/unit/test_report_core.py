"""The report's pure parts: the calculation rule, numbers from report data, escaping, the round
trip through OUT/report_data/, the cluster examples and the throughput history."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from selectray.report.assemble import numbers, render
from selectray.report.data import (
    CALC_PATTERN,
    ReportData,
    cluster_examples,
    involves_calculation,
    read_data,
    shown_positions,
    write_data,
)
from selectray.report.history import append, lookup
from selectray.storage import Location

CALC_CASES = {
    "What is 2 + 2?": True, "Compute 3*4 and 10/5.": True, "x^2 where x = 3, so 3^2=9": True,
    "Subtract: 10 - 3": True, "7 × 6 is": True, "84 ÷ 4": True,
    "Plan a 4-day trip to Prague.": False, "The years 2020-2021 were hard.": False, "Call 555-1234.": False,
    "List 3 habits of effective teams.": False, "Solve 12 − 5": True, "٣ + ٤": False,  # Arabic-Indic digits: not [0-9]
}


@pytest.mark.parametrize("text,expected", CALC_CASES.items())
def test_calculation_rule(text, expected):
    assert involves_calculation(text) is expected


def test_the_run_applies_the_same_rule_with_re2():
    texts = list(CALC_CASES) + ["", "a\t+\t1", "1\n+2", "3  +  4", "no digits here"]
    re2 = pc.match_substring_regex(pa.array(texts), CALC_PATTERN).to_pylist()
    assert re2 == [re.search(CALC_PATTERN, t) is not None for t in texts]


def _data(tmp_path, texts=None) -> ReportData:
    """Six usable rows; rows 1 and 4 selected (rank 1, 2); row 5 rejected late; two clusters."""
    rows = pa.table({
        "pos": np.arange(6), "id": [f"r{i}" for i in range(6)], "length": [10, 20, 30, 40, 50, 60],
        "calc": [True, True, False, False, False, True], "rank": pa.array([None, 1, None, None, 2, None], pa.int64()),
        "late_reject": [None, None, None, None, None, "too_long"],
        "cluster_id": [0, 0, 0, 1, 1, 1], "distance": [0.0, 0.5, 0.9, 0.0, 0.2, 0.4],
        "score_model": [0.1, 0.9, 0.2, 0.3, 0.8, np.nan],
    })
    centers = pa.table({"order": [0, 1], "pos": [0, 3], "radius": [1.5, 0.9], "seed": [False, False]})
    meta = {"method": "hybrid", "input": ["x.jsonl"], "output": str(tmp_path), "seed": 0, "budget": 2,
            "config": {"budget": 2, "proportion": 0.2, "seed": 0, "hybrid": {"num_clusters": 2}, "kcenter": {"mode": "exact"},
                       "embed": {"model": "hash"}}, "created": "now",
            "input_rows": 8, "selected": 2, "rejected": 3, "rejected_by_reason": {"bad_json": 2, "too_long": 1},
            "stages": {"read": {"rows": 8, "seconds": 1.5}, "kcenter": {"rows": 6, "seconds": 0.5, "reused": False}},
            "selection": {}, "sections": {"selectit": {"alpha": 0.2}}, "columns": {"instruction": "instruction"},
            "kcenter": {"seeds": 0, "passes": 1, "reused": False},
            "coverage": {"sample_rows": 5, "radius": 0.5, "mean_distance": 0.2, "random_radius": 0.9,
                         "random_mean_distance": 0.4}}
    data = ReportData(meta, rows, centers=centers)
    data.texts = pa.table({"pos": [1, 4], "id": ["r1", "r4"], "instruction": texts or ["first", "second"],
                           "input": [None, None], "output": ["a", "b"], "clipped": [False, False]})
    return data


def test_numbers_from_report_data(tmp_path):
    r = numbers(_data(tmp_path))
    assert (r["input_rows"], r["selected"], r["not_selected"], r["rejected"]) == (8, 2, 3, 3)
    assert r["input_rows"] == r["selected"] + r["not_selected"] + r["rejected"]
    s = r["statistics"]
    assert s["rows"] == {"pool": 5, "selected": 2}
    assert s["length_chars"]["pool_mean"] == pytest.approx((10 + 20 + 30 + 40 + 50) / 5)
    assert s["length_chars"]["selected_mean"] == pytest.approx(35)
    assert s["calculation"]["pool_share"] == pytest.approx(2 / 5) and s["calculation"]["selected_share"] == 0.5
    assert s["score_model"]["selected_mean"] == pytest.approx(0.85)
    assert [x["id"] for x in r["selected_rows"]["top"]] == ["r1", "r4"]
    why = r["selected_rows"]["top"][0]["why"]
    assert why["score_model"] == 0.9 and why["cluster_id"] == 0 and why["cluster_size"] == 3
    assert r["kcenter"]["k"] == 2 and r["kcenter"]["radius"] == 0.9 and r["wall_seconds"] == 2.0
    assert r["settings"]["hybrid"] == {"num_clusters": 2} and r["settings"]["kcenter"] == {"mode": "exact"}
    assert "embed" not in r["settings"]  # the embed stage did not run


def test_cluster_examples_are_center_median_and_farthest():
    cluster = np.array([0, 0, 0, 0, 1, 1, 2])
    distance = np.array([0.3, 0.0, 0.9, 0.5, 0.1, 0.0, 0.0])
    usable = np.array([True, True, True, True, True, True, False])
    ex = cluster_examples(cluster, distance, usable, {0: 1})
    # cluster 0 by distance: pos 1 (0.0), 0 (0.3), 3 (0.5), 2 (0.9): center 1, median pos 3, farthest 2.
    assert ex == [(0, 4, [1, 3, 2]), (1, 2, [5, 4])]


def test_report_data_round_trip_gives_the_same_report(tmp_path):
    data = _data(tmp_path)
    out = Location(str(tmp_path))
    write_data(out, data)
    first = render(out, data)
    again = render(out, read_data(out))
    assert json.loads(json.dumps(first, default=str)) == json.loads((tmp_path / "report.json").read_text())
    assert first == again
    assert set(shown_positions(read_data(out)).tolist()) >= {1, 4}


def test_row_text_is_escaped_in_the_page(tmp_path):
    data = _data(tmp_path, texts=["<script>alert(1)</script> & <b>bold</b>", "x</td></tr><img src=x onerror=alert(2)>"])
    render(Location(str(tmp_path)), data)
    html = (tmp_path / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert html.count("<script>") == 1  # the page's own


def test_missing_report_data_is_a_one_line_error(tmp_path):
    from selectray.errors import InputError

    with pytest.raises(InputError, match="no report_data/run.json"):
        read_data(str(tmp_path))


def test_history_fits_start_up_and_rate(tmp_path):
    path = tmp_path / "throughput.json"
    append("hw", {"embed:x": (100, 11.0)}, path)
    assert lookup("hw", "embed:x", path) == (pytest.approx(100 / 11), 0.0, 1)  # one run: its pooled rate
    append("hw", {"embed:x": (1000, 20.0)}, path)
    rate, fixed, n = lookup("hw", "embed:x", path)
    # seconds = fixed + units / rate through (100, 11) and (1000, 20): rate 100/s, 10 s start-up.
    assert (rate, fixed, n) == (pytest.approx(100), pytest.approx(10), 2)
    assert lookup("other hw", "embed:x", path) is None and lookup("hw", "score:y", path) is None
