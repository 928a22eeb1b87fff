"""The `selectray` command: usage, config and input errors exit 2 with one line and no traceback."""

import subprocess
import sys

import pytest


def selectray(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "selectray", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def config(tmp_path):
    def make(text):
        p = tmp_path / "run.yaml"
        p.write_text(text)
        return str(p)

    return make


def test_missing_input_file(config, tmp_path):
    proc = selectray("run", "--config", config(f"input: {tmp_path}/nope.jsonl\noutput: {tmp_path}/out\n"))
    assert_one_line_error(proc, "input not found", "nope.jsonl")


def test_unreadable_parquet_names_the_file(config, tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet")
    proc = selectray("run", "--config", config(f"input: {bad}\noutput: {tmp_path}/out\n"))
    assert_one_line_error(proc, "cannot read", "broken.parquet")


def test_bad_config_key(config):
    proc = selectray("run", "--config", config("input: x.jsonl\nembed:\n  batchsize: 3\n"))
    assert_one_line_error(proc, "embed.batchsize", "batch_size")


def test_unknown_method_on_command_line(config):
    proc = selectray("run", "--config", config("input: x.jsonl\n"), "--method", "best")
    assert_one_line_error(proc, "invalid choice", "best")


def test_unknown_method_in_config(config):
    proc = selectray("run", "--config", config("input: x.jsonl\nmethod: best\n"))
    assert_one_line_error(proc, "'method'", "random")


def test_missing_config_file(tmp_path):
    proc = selectray("run", "--config", str(tmp_path / "absent.yaml"))
    assert_one_line_error(proc, "config file not found")


def test_bad_set_override(config):
    proc = selectray("run", "--config", config("input: x.jsonl\n"), "--set", "novalue")
    assert_one_line_error(proc, "KEY=VALUE")


def test_budget_and_proportion_are_exclusive(config):
    proc = selectray("run", "--config", config("input: x.jsonl\n"), "--budget", "3", "--proportion", "0.1")
    assert_one_line_error(proc, "not allowed with")


def test_help_explains_every_option():
    top = selectray("--help")
    assert top.returncode == 0 and "run" in top.stdout
    run = selectray("run", "--help")
    assert run.returncode == 0
    for option in ("--config", "--input", "--output", "--method", "--budget", "--proportion", "--seed", "--set"):
        assert option in run.stdout
    for section in ("columns:", "embed:", "kcenter:", "selectit:", "selectllm:"):
        assert section in run.stdout
