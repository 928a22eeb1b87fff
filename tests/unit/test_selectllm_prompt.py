"""SelectLLM prompt and answer parsing (pure)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from selectray.prompts import completion_suffix, parse_selection, selection_prompt


def test_prompt_numbers_candidates_and_states_task():
    p = selection_prompt([("Write a poem.", None), ("Summarise this.", "A long text " * 200), ("Add 2 and 3.", "")], 2)
    assert "[1] Write a poem." in p and "[2] Summarise this." in p and "[3] Add 2 and 3." in p
    assert "Input: A long text" in p and "[4]" not in p
    assert "Select the 2 instructions" in p and "[1, 2]" in p
    for word in ("complexity", "diversity", "clarity", "real-world", "instructional value"):
        assert word in p
    assert len(p) < 2500  # the long input was clipped
    assert completion_suffix(1).endswith("[")


def test_parse_accepted_shapes():
    assert parse_selection("[3]", 10, 1) == [2]
    assert parse_selection("[3, 7]", 10, 2) == [2, 6]
    assert parse_selection("[3][7]", 10, 2) == [2, 6]
    assert parse_selection("3, 7", 10, 2) == [2, 6]
    assert parse_selection("I would pick [4] because it is deep; [9] is also good.", 10, 2) == [3, 8]
    assert parse_selection("The best one is 5.", 10, 1) == [4]
    assert parse_selection("3]", 10, 1) == [2]  # a completion that continued an opening bracket


def test_parse_drops_bad_ids():
    assert parse_selection("[0, 11, 4, 4, 2]", 10, 3) == [3, 1]
    assert parse_selection("[12]", 10, 1) == []
    assert parse_selection("none of them", 10, 1) == []
    assert parse_selection("version 1.5 is [2]", 10, 1) == [1]
    assert parse_selection("Out of 10 candidates, [6] wins", 10, 1) == [5]  # brackets beat prose numbers
    assert parse_selection("[1, 2, 3]", 10, 2) == [0, 1]  # at most `picks`


def test_parse_never_raises_and_names_nothing_on_odd_input():
    # None of these names a valid candidate 1..10: the answer is empty (the group falls back).
    for odd in (None, 42, b"[3]", "", "[", "]]][[[", "[a, b]", "9" * 50, "[-3]", "[0]", "[11]", "\ud800", "[3.5]"):
        assert parse_selection(odd, 10, 2) == [], odd
    assert parse_selection("[3]", 0, 1) == [] and parse_selection("[3]", 10, 0) == []


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("0123456789[], .\nab-")), max_size=60) | st.text(max_size=60),
       n=st.integers(0, 30), picks=st.integers(0, 5))
def test_parse_property(text, n, picks):
    out = parse_selection(text, n, picks)
    assert len(out) == len(set(out)) <= max(picks, 0)
    assert all(isinstance(i, int) and 0 <= i < n for i in out)
