"""Validation, ids and JSONL parsing: pure functions, no Ray."""

import pyarrow as pa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from selectray.stages.validate import (
    HASH,
    REJECT,
    TextColumns,
    content_hash,
    content_hashes,
    parse_jsonl,
    validate_table,
)

COLS = TextColumns("instruction", "input", "output", None)


def _reasons(table, cols=COLS, max_chars=100, need_output=True):
    return validate_table(table, cols, max_chars=max_chars, need_output=need_output)[REJECT].to_pylist()


def test_each_reason_and_ok_rows():
    t = pa.table({
        "instruction": ["fine", "", "   \n", None, "no answer", "x" * 90, "fine too"],
        "input": [None, None, None, None, None, "y" * 20, "context"],
        "output": ["ok", "ok", "ok", "ok", "  ", "z", "answer"],
    })
    assert _reasons(t) == [None, "empty_instruction", "empty_instruction", "empty_instruction",
                           "missing_output", "too_long", None]


def test_missing_output_only_when_needed():
    t = pa.table({"instruction": ["a", "b"], "output": [None, "x"]})
    assert _reasons(t, need_output=False) == [None, None]
    assert _reasons(t, need_output=True) == ["missing_output", None]


def test_missing_output_column_is_missing_output():
    t = pa.table({"instruction": ["a"]})
    assert _reasons(t, need_output=True) == ["missing_output"]


def test_too_long_counts_all_text_fields():
    t = pa.table({"instruction": ["a" * 40], "input": ["b" * 40], "output": ["c" * 21]})
    assert _reasons(t, max_chars=100) == ["too_long"]
    assert _reasons(t, max_chars=101) == [None]


def test_user_ids_kept_and_blank_ids_rejected():
    t = pa.table({"instruction": ["a", "b", "c"], "output": ["x"] * 3, "uid": [7, None, 9]})
    v = validate_table(t, TextColumns("instruction", None, "output", "uid"), max_chars=100, need_output=True)
    assert v["id"].to_pylist() == ["7", None, "9"]
    assert v[REJECT].to_pylist() == [None, "missing_id", None]
    assert v["uid"].to_pylist() == [7, None, 9]  # the original column is untouched
    # A block that lacks the id column altogether (JSON Lines without the key) rejects each row.
    v = validate_table(t.drop_columns(["uid"]), TextColumns("instruction", None, "output", "uid"), max_chars=100,
                       need_output=True)
    assert v[REJECT].to_pylist() == ["missing_id"] * 3


def test_content_hash_ids_are_stable_and_field_aware():
    t = pa.table({"instruction": ["ab", "a"], "input": ["", "b"], "output": ["x", "x"]})
    v = validate_table(t, COLS, max_chars=100, need_output=True)
    ids = v["id"].to_pylist()
    assert ids == v[HASH].to_pylist()
    assert ids[0] != ids[1]  # "ab"+"" and "a"+"b" must not collide
    assert ids[0] == content_hash("ab", "", "x") == content_hash("ab", None, "x")


def test_content_hash_fields_cannot_collide_through_a_separator():
    # Joined with a separator character, these two rows used to share a hash (and so a
    # cached score): the fields are length-prefixed now.
    assert content_hash("a\x1fb", "c", "d") != content_hash("a", "b\x1fc", "d")
    assert content_hash("a", "", "b") != content_hash("a", "b", "")
    assert content_hash("\ud800", "", "x") != content_hash("\udc00", "", "x")  # lone surrogates hash too


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_content_hash_is_injective_on_random_rows(a, b):
    assume(a != b)
    assert content_hash(*a) != content_hash(*b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*(st.none() | st.text(st.characters(blacklist_categories=("Cs",))),) * 3), max_size=12))
def test_batched_content_hashes_equal_the_row_at_a_time_ones(rows):
    # The read stage hashes whole batches (Arrow joins each row's fields); the one-row
    # function is the definition.
    cols = [pa.array([r[i] for r in rows], pa.string()) for i in range(3)]
    assert content_hashes(*cols).to_pylist() == [content_hash(*r) for r in rows]
    if rows:  # a slice of an array (buffers with an offset) hashes its own rows
        assert content_hashes(*(c.slice(1) for c in cols)).to_pylist() == [content_hash(*r) for r in rows[1:]]


def test_binary_column_with_bad_utf8_is_bad_encoding():
    t = pa.table({"instruction": pa.array([b"caf\xc3\xa9", b"\xff\xfe"], pa.binary()), "output": ["x", "y"]})
    v = validate_table(t, COLS, max_chars=100, need_output=True)
    assert v[REJECT].to_pylist() == [None, "bad_encoding"]


def test_parse_jsonl_rejects_bad_lines_and_keeps_columns():
    data = (b'{"instruction": "hi", "output": "yo", "extra": 1}\n'
            b'\xff\xfe not utf8\n'
            b'[1, 2]\n'
            b'\n'
            b'{"instruction": 5, "output": "n", "extra": "mixed"}\n'
            b'{"instruction": "last", "output": "z", "late_key": true}\n')
    t = parse_jsonl(data, ["instruction", "input", "output"])
    assert t.num_rows == 5  # the blank line is not a row
    assert t[REJECT].to_pylist() == [None, "bad_encoding", "bad_json", "bad_type", None]
    assert t["_raw_line"].to_pylist()[2] == "[1, 2]"
    # A key that only appears on a late line is not dropped; mixed types become text.
    assert t["late_key"].to_pylist() == [None, None, None, None, True]
    assert t["extra"].to_pylist() == ["1", None, None, "mixed", None]
    assert t["input"].type == pa.string()
