"""`selectray.generate` (no Ray): determinism, planted bad rows counted from the files themselves,
JSON Lines equal to Parquet, length and topic spread."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from selectray.errors import ConfigError
from selectray.generate import MANIFEST, MAX_CHARS, REASONS, pool_table, write_pool


def _read_parquet(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("part-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _length(r: dict) -> int:
    return sum(len(r[c]) for c in ("instruction", "input", "output") if isinstance(r.get(c), str))


def _defects(rows: list[dict]) -> Counter:
    """Reject reasons found by looking at each row on its own (plus ids seen before), as plain Python."""
    found, seen = Counter(), set()
    for r in rows:
        why = [name for name, bad in (("empty_instruction", _blank(r["instruction"])), ("missing_output", _blank(r["output"])),
                                      ("missing_id", _blank(r["id"])), ("duplicate_id", r["id"] in seen),
                                      ("too_long", _length(r) > MAX_CHARS)) if bad]
        assert len(why) <= 1, (why, r["id"])  # one defect per planted row
        found.update(why)
        if not _blank(r["id"]):
            seen.add(r["id"])
    return found


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
    for fmt in ("parquet", "jsonl"):
        a, b, c = (tmp_path / f"{fmt}-{x}" for x in "abc")
        write_pool(a, 12_000, seed=3, fmt=fmt, shard_rows=5_000, threads=1)
        write_pool(b, 12_000, seed=3, fmt=fmt, shard_rows=5_000, threads=2)
        write_pool(c, 12_000, seed=4, fmt=fmt, shard_rows=5_000)
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir()) == [MANIFEST] + [f"part-0000{i}.{fmt}" for i in range(3)]
        assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
        assert (a / "part-00000." f"{fmt}").read_bytes() != (c / "part-00000." f"{fmt}").read_bytes()
    x, y = _read_parquet(tmp_path / "parquet-a"), _read_parquet(tmp_path / "parquet-c")
    same = sum(p["instruction"] == q["instruction"] and p["output"] == q["output"] for p, q in zip(x, y))
    assert same < len(x) * 0.01


def test_rows_do_not_depend_on_shard_size(tmp_path):
    write_pool(tmp_path / "a", 9_000, seed=1, shard_rows=9_000)
    write_pool(tmp_path / "b", 9_000, seed=1, shard_rows=1_234)
    a, b = _read_parquet(tmp_path / "a"), _read_parquet(tmp_path / "b")
    assert len(a) == len(b) == 9_000 and a == b
    assert len(list((tmp_path / "b").glob("part-*.parquet"))) == 8
    assert pool_table(9_000, seed=1).to_pylist() == a


def test_jsonl_lines_are_the_parquet_rows(tmp_path):
    # Without bad rows, every line is a JSON object equal to the Parquet row (escaping of newlines,
    # quotes and non-ASCII text included).
    write_pool(tmp_path / "p", 12_000, seed=2, bad_share=0, shard_rows=5_000)
    write_pool(tmp_path / "j", 12_000, seed=2, bad_share=0, fmt="jsonl", shard_rows=5_000)
    lines = b"".join(f.read_bytes() for f in sorted((tmp_path / "j").glob("part-*.jsonl"))).split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    rows = _read_parquet(tmp_path / "p")
    assert parsed == rows
    assert any("\n" in r["output"] for r in rows) and any(not r["output"].isascii() for r in rows)


@pytest.mark.parametrize("n,share", [(30_000, 0.01), (4_000, 0.05)])
def test_parquet_plants_each_reason_as_recorded(tmp_path, n, share):
    summary = write_pool(tmp_path, n, seed=5, bad_share=share, shard_rows=10_000)
    rows = _read_parquet(tmp_path)
    total = round(n * share)
    per = total // len(REASONS["parquet"])
    assert summary["planted_total"] == total and sum(summary["planted"].values()) == total
    assert set(summary["planted"]) == set(REASONS["parquet"])
    assert all(per <= c <= per + 1 for c in summary["planted"].values())
    assert len(rows) == n == summary["rows"]
    assert _defects(rows) == Counter(summary["planted"])
    assert json.loads((tmp_path / MANIFEST).read_text()) == summary


def test_jsonl_plants_broken_lines_and_numbers_too(tmp_path):
    summary = write_pool(tmp_path, 16_000, seed=6, bad_share=0.02, fmt="jsonl", shard_rows=6_000)
    found, rows = Counter(), []
    for f in sorted(tmp_path.glob("part-*.jsonl")):
        for raw in f.read_bytes().splitlines():
            assert raw.strip()
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                found["bad_encoding"] += 1
                continue
            except ValueError:
                found["bad_json"] += 1
                continue
            if not isinstance(obj, dict):
                found["bad_json"] += 1
            elif obj["instruction"] is not None and not isinstance(obj["instruction"], str):
                found["bad_type"] += 1
            else:
                rows.append(obj)
    found += _defects(rows)
    assert sum(found.values()) == 320
    assert found == Counter(summary["planted"]) and set(found) == set(REASONS["jsonl"])
    assert len(rows) + found["bad_encoding"] + found["bad_json"] + found["bad_type"] == 16_000


def test_lengths_and_topics_spread():
    rows = pool_table(25_000, seed=7, bad_share=0).to_pylist()
    lengths = np.array([_length(r) for r in rows])
    assert 700 <= lengths.mean() <= 950  # about 800 characters a row
    assert np.median(lengths) < lengths.mean()  # skewed to the right
    assert np.percentile(lengths, 99.9) > 5 * np.median(lengths)  # a long tail
    assert lengths.max() <= MAX_CHARS and lengths.min() > 50
    assert 0.2 < np.mean([bool(r["input"]) for r in rows]) < 0.4
    domains = Counter(r["domain"] for r in rows)
    assert len(domains) >= 30
    shares = np.array(list(domains.values())) / len(rows)
    assert shares.max() < 0.15 and shares.min() > 0.008  # Zipf-like: no domain dominates, none is missing
    assert len({r["instruction"] for r in rows}) > 5_000
    assert len({r["output"] for r in rows}) > 0.99 * len(rows)


def test_instructions_cluster_by_domain():
    # What the pipeline embeds (instruction and input) carries its domain's words: TF-IDF vectors
    # put held-out rows nearest their own domain's centroid, against 1 in 35 by chance.
    from sklearn.feature_extraction.text import TfidfVectorizer

    from selectray.stages.embed import embedding_text

    rows = pool_table(6_000, seed=8, bad_share=0).to_pylist()
    x = TfidfVectorizer().fit_transform([embedding_text(r["instruction"], r["input"]) for r in rows]).toarray()
    names = sorted({r["domain"] for r in rows})
    label = np.array([names.index(r["domain"]) for r in rows])
    fit, test = slice(0, 4_000), slice(4_000, None)
    centroids = np.stack([x[fit][label[fit] == d].mean(axis=0) for d in range(len(names))])
    accuracy = np.mean(np.argmax(x[test] @ centroids.T, axis=1) == label[test])
    assert accuracy > 0.9, accuracy


@pytest.mark.parametrize("kwargs,needle", [
    ({"rows": 0}, "--rows"), ({"rows": 10, "bad_share": 0.7}, "--bad-share"),
    ({"rows": 10, "shard_rows": 0}, "--shard-rows"), ({"rows": 10, "fmt": "csv"}, "--format"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        write_pool(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_existing_pool_needs_overwrite(tmp_path):
    write_pool(tmp_path, 3_000, shard_rows=1_000)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--overwrite"):
        write_pool(tmp_path, 500)
    write_pool(tmp_path, 500, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "notes.txt", "part-00000.parquet"]
    assert pq.read_metadata(tmp_path / "part-00000.parquet").num_rows == 500


def test_generate_imports_no_ray():
    code = "import sys, selectray.generate; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
