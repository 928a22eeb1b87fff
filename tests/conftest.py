"""Shared fixtures: one local Ray per test session, offline Hugging Face, small pools, small models.

Layout: `unit/` (no Ray: pure cores, models called directly), `ray/` (parts on the
session's local Ray), `e2e/` (whole runs and the command line), `gpu/` (CUDA only).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A hub cache of this session's own, set before anything imports huggingface_hub and before
# the session's Ray starts (its workers inherit it): tests lay out models there by hand.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="selectray-test-hf-")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

# What examples/make_pool.py plants in examples/pool.jsonl: 5 empty instructions, 6
# missing outputs, 5 reused ids, 4 overlong rows, 1 number as instruction, 1 line of
# broken UTF-8, 1 broken JSON line.
PLANTED = {"empty_instruction": 5, "duplicate_id": 5, "too_long": 4, "bad_type": 1, "bad_encoding": 1, "bad_json": 1}


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray shared by every test that needs one (started once, on first use)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def demo_pool() -> dict:
    """The demo pool: its path, line count and the reject reasons planted in it."""
    path = ROOT / "examples" / "pool.jsonl"
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return {"path": path, "lines": lines, "planted": dict(PLANTED)}


@pytest.fixture(scope="session")
def write_jsonl():
    def write(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


@pytest.fixture(scope="session")
def clean_rows() -> list[dict]:
    """120 valid rows from the demo generator (varied domains and lengths)."""
    from make_pool import make_rows

    return make_rows(120, seed=5)


@pytest.fixture(scope="session")
def make_cfg(demo_pool):
    """make_cfg(tmp_path, **overrides): a RunConfig on the demo pool with the hash embedder, 10 %."""
    from selectray.config import parse_config

    serve_port = free_port()

    def make(tmp_path: Path, **over):
        # Serve on a free port of this session: another Ray on the machine may serve on the
        # default one, and Serve's proxies share a port (SO_REUSEPORT), splitting the requests.
        base = {"input": str(demo_pool["path"]), "output": str(tmp_path / "out"), "embed": {"model": "hash"},
                "ray": {"progress": False}, "proportion": 0.1, "serve": {"port": serve_port}}
        for k, v in over.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return parse_config(base)

    return make


# ----- rater models: the real SmolLM2 and tiny random-weight models on its tokenizer ----------

RATING_ROWS = [
    ("Write a haiku about autumn.", "", "Leaves drift to the ground\nCrisp air hums through empty trees\nThe year exhales slow"),
    ("What is 2 + 2?", "", "5"),
    ("Translate the sentence into French.", "Good morning, how are you?", "Bonjour, comment allez-vous ?"),
    ("Explain photosynthesis in one sentence.", "", "Plants turn sunlight, water and carbon dioxide into sugar and oxygen."),
    ("List three prime numbers.", "", "banana"),
    ("Summarize the text.", "The meeting moved to Tuesday because the room was booked on Monday.", "The meeting is now on Tuesday."),
    ("Give a synonym for 'happy'.", "", "Joyful."),
    ("Write a Python function that returns the square of x.", "", "def square(x):\n    return x * x"),
    ("Name the capital of Japan.", "", "The capital of Japan is Tokyo, a city of about fourteen million people."),
    ("Is the earth flat?", "", "Yes, obviously, everyone knows that."),
]


@pytest.fixture(scope="session")
def rating_rows() -> list[tuple[str, str, str]]:
    """Ten (instruction, input, output) rows, good and bad responses."""
    return list(RATING_ROWS)


@pytest.fixture(scope="session")
def prompts_for():
    """prompts_for(rows, layout): every row's K rating prompts, row-major."""
    from selectray.prompts import RATING_PROMPTS, build_rating_prompt

    return lambda rows, layout: [build_rating_prompt(rp, *row, layout) for row in rows for rp in RATING_PROMPTS]


@pytest.fixture(scope="session")
def reference_probs():
    """reference_probs(backend, prompts): one prompt per forward pass over the full sequence,
    full-vocabulary logits, float64 softmax at the last position: the obviously correct way."""
    import numpy as np
    import torch

    @torch.inference_mode()
    def ref(backend, prompts):
        tok, out = backend.tokenizer, []
        for prefix, suffix in prompts:
            ids = [tok.bos_token_id] if backend.add_bos else []
            ids += tok.encode(prefix, add_special_tokens=False) if prefix else []
            ids += tok.encode(suffix, add_special_tokens=False)
            logits = backend.model(input_ids=torch.tensor([ids], device=backend.device)).logits[0, -1].double()
            out.append(torch.softmax(logits, -1)[list(backend.rating.ids)].cpu().numpy())
        return np.array(out)

    return ref


@pytest.fixture(scope="session")
def smol():
    """The real SmolLM2-135M-Instruct (bundled), on the CPU."""
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend("smollm2-135m", device="cpu", batch_size=8)


def _sharpen(model, rating_ids, factor):
    # Random weights spread the next-token mass over the whole vocabulary (~2e-5 each);
    # larger output rows for the rating tokens give them probabilities that vary a lot
    # between prompts, so the comparisons are not trivially within tolerance. (The
    # embeddings are untied so that the input side stays at its usual scale.)
    import torch

    with torch.no_grad():
        model.get_output_embeddings().weight[list(rating_ids)] *= factor
    return model


def _save(model, tokenizer, path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(smol, tmp_path_factory) -> str:
    """A 2-layer random Llama on SmolLM2's real tokenizer (the digits are single tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(smol.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = _sharpen(LlamaForCausalLM(cfg), smol.rating.ids, 60)
    return _save(model, smol.tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_llama_dir):
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_llama_dir, device="cpu", batch_size=6, max_batch_tokens=600)


@pytest.fixture(scope="session")
def tiny_gemma(smol, tmp_path_factory):
    """A 2-layer random Gemma 3 with sliding-window layers (window shorter than most prompts)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from selectray.backends.transformers import TransformersBackend

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(
        vocab_size=len(smol.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=24,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    path = _save(_sharpen(Gemma3ForCausalLM(cfg), smol.rating.ids, 20), smol.tokenizer, tmp_path_factory.mktemp("tiny-gemma"))
    return TransformersBackend(path, device="cpu", batch_size=10)


@pytest.fixture(scope="session")
def gemma():
    """The real Gemma-3-270M (bundled), on the CPU."""
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend("gemma3-270m", device="cpu", batch_size=8)


# ----- servers the tests start on 127.0.0.1 and end by process id ---------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, timeout: float = 60.0) -> None:
    import socket
    import time

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(*procs, timeout: float = 30.0) -> None:
    """End child processes this test session started, by their ids (never by name): all are told
    to stop first, so their shut-downs overlap."""
    import subprocess

    live = [p for p in procs if p is not None and p.poll() is None]
    for p in live:
        p.terminate()
    for p in live:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on 127.0.0.1 with a bucket `selectray-test`; yields the
    environment a client needs (endpoint, credentials, region)."""
    import subprocess

    import pyarrow.fs as pafs

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="testing", secret_key="testing",
                               region="us-east-1", scheme="http", allow_bucket_creation=True)
        fs.create_dir("selectray-test")
        yield {"env": env, "fs": fs, "bucket": "selectray-test"}
    finally:
        stop_process(proc)


def add_to_hub_cache(model_dir: str, repo: str, commit: str, branch: str | None = "main") -> Path:
    """Lay a model folder out in this session's hub cache as `repo` at `commit` (the hub's own
    layout: refs/<branch> holds the commit, snapshots/<commit>/ the files)."""
    import shutil

    base = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    if not snap.exists():
        shutil.copytree(model_dir, snap)
    if branch:
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / branch).write_text(commit)
    return snap


@pytest.fixture(scope="session")
def hub_model(tiny_llama_dir, smol, tmp_path_factory):
    """`acme/tiny-rater` in the session's hub cache: `main` at a first commit; `second` is
    another commit (other random weights) that a test may move `main` to."""
    import torch
    from transformers import AutoModelForCausalLM

    first, second = "1" * 40, "2" * 40
    add_to_hub_cache(tiny_llama_dir, "acme/tiny-rater", first)
    torch.manual_seed(7)
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    path = tmp_path_factory.mktemp("tiny-llama-v2")
    _save(other, smol.tokenizer, path)
    add_to_hub_cache(str(path), "acme/tiny-rater", second, branch=None)
    return {"repo": "acme/tiny-rater", "first": first, "second": second,
            "move_main": lambda commit: add_to_hub_cache(tiny_llama_dir, "acme/tiny-rater", commit)}


# ----- finished runs shared by the report, compare, plan and browser tests --------------------

# A row whose text is markup: the report must show it as text. Its long response makes it the
# longest row, so a `length` run ranks it first.
SCRIPT_ROW = {"id": "html-row", "instruction": "Explain what <script>alert(1)</script> does & why pages escape it.",
              "input": "", "output": "It would run JavaScript in the reader's browser. " * 40}


def _finished_run(tmp: Path, pool: Path, name: str, **over):
    from selectray.config import parse_config
    from selectray.pipeline import run

    cfg = parse_config({"input": str(pool), "output": str(tmp / name), "embed": {"model": "hash"},
                        "ray": {"progress": False}, **over})
    return cfg, run(cfg, quiet=True)


@pytest.fixture(scope="session")
def report_runs(ray_local, tmp_path_factory, clean_rows, write_jsonl) -> dict:
    """Two finished runs, `length` and `kcenter` (budget 8, hash embedder, coverage on; for `length`
    over a sample of 10 rows, so only the coverage figure's rows are embedded), on one pool of 40
    demo rows + SCRIPT_ROW: {"pool", "rows", "length", "kcenter"} (output folders) and
    {"length_report", "kcenter_report"}."""
    tmp = tmp_path_factory.mktemp("report-runs")
    rows = [dict(r) for r in clean_rows[:40]] + [dict(SCRIPT_ROW)]
    pool = write_jsonl(tmp / "pool.jsonl", rows)
    out: dict = {"pool": pool, "rows": rows}
    for method, sample in (("length", 10), ("kcenter", 5000)):
        _, out[f"{method}_report"] = _finished_run(tmp, pool, method, method=method, budget=8,
                                                   report={"coverage_sample": sample})
        out[method] = tmp / method
    return out


@pytest.fixture(scope="session")
def selectit_run(ray_local, tmp_path_factory, clean_rows, write_jsonl, tiny_llama_dir) -> tuple:
    """A finished SelectIT run with the tiny random rater on 30 demo rows + one without a response,
    and the plan made for it beforehand: (config, plan, report)."""
    from selectray.config import parse_config
    from selectray.plan import make_plan

    tmp = tmp_path_factory.mktemp("selectit-run")
    rows = [dict(r) for r in clean_rows[:30]] + [{"id": "no-answer", "instruction": "Say hi.", "input": "", "output": None}]
    pool = write_jsonl(tmp / "pool.jsonl", rows)
    over = {"method": "selectit", "budget": 6, "selectit": {"models": [{"name": tiny_llama_dir, "batch_size": 8}]}}
    cfg = parse_config({"input": str(pool), "output": str(tmp / "out"), "embed": {"model": "hash"},
                        "ray": {"progress": False}, **over})
    plan = make_plan(cfg)
    _, report = _finished_run(tmp, pool, "out", **over)
    return cfg, plan, report


@pytest.fixture(scope="session")
def selectllm_run(ray_local, tmp_path_factory, clean_rows, write_jsonl) -> tuple:
    """A finished SelectLLM run (the real SmolLM2 rater on Ray Serve) on 60 demo rows, budget 5,
    and the plan made for it beforehand: (config, plan, report). Loads a real model: slow."""
    from selectray.config import parse_config
    from selectray.plan import make_plan

    tmp = tmp_path_factory.mktemp("selectllm-run")
    pool = write_jsonl(tmp / "pool.jsonl", clean_rows[:60])
    over = {"method": "selectllm", "budget": 5, "selectllm": {"candidates": 5, "max_in_flight": 4},
            "serve": {"num_cpus": 0.5, "max_replicas": 1}}
    cfg = parse_config({"input": str(pool), "output": str(tmp / "out"), "embed": {"model": "hash"},
                        "ray": {"progress": False}, **over})
    plan = make_plan(cfg)
    _, report = _finished_run(tmp, pool, "out", **over)
    return cfg, plan, report


# ----- the Ray Serve rater app and servers of the serve tests ------------------------------


@pytest.fixture(scope="session")
def server_tools():
    """free_port(), wait_for_port(port, proc) and stop_process(proc) for tests that start servers."""
    from types import SimpleNamespace

    return SimpleNamespace(free_port=free_port, wait_for_port=wait_for_port, stop_process=stop_process)


@pytest.fixture(scope="session")
def rater_app(ray_local):
    """rater_app(models, **serve_settings): a context manager that deploys the rater app on the
    session's Ray (one replica per model, 0.5 CPU) and yields (ingress handle, base URL); the app
    is deleted on exit. Serve's HTTP port is the one of its first start in the session."""
    import contextlib

    @contextlib.contextmanager
    def start(models, **settings):
        from ray import serve as ray_serve

        from selectray import serve
        from selectray.settings import ModelSpec, ServeConfig

        cfg = ServeConfig(**{"port": free_port(), "min_replicas": 1, "max_replicas": 1, "num_cpus": 0.5, **settings})
        handle = serve.start([ModelSpec(name=m) if isinstance(m, str) else m for m in models], cfg, gpus=False)
        port = ray_serve.context._get_global_client().http_config.port
        try:
            yield handle, f"http://127.0.0.1:{port}"
        finally:
            serve.stop()

    return start


@pytest.fixture(scope="session")
def procs():
    """Helpers for servers a test starts: `free_port()`, `wait_for_port(port, proc)`, `stop(proc)`."""
    from types import SimpleNamespace

    return SimpleNamespace(free_port=free_port, wait_for_port=wait_for_port, stop=stop_process)


@pytest.fixture(scope="module")
def ray_cluster(procs, tmp_path_factory):
    """A Ray cluster of two nodes on 127.0.0.1: a head (dashboard on) and a worker, each
    `ray start --block` as a child process of this test, ended by its process id."""
    import subprocess

    ray_bin = str(Path(sys.executable).with_name("ray"))
    port, dash = procs.free_port(), procs.free_port()
    common = ["--block", "--num-cpus", "2", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]

    def own_ports():  # every port a node opens, free ones: other Ray instances may run on the machine
        return [arg for name in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
                for arg in (name, str(procs.free_port()))]

    # A loaded machine can take longer than the dashboard's default 30 s to start its modules.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "300",
           "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300"}
    logs = tmp_path_factory.mktemp("ray-cluster")
    # Each node its own temp dir, as on separate machines: nodes sharing one session folder share
    # its runtime_resources/, where one node's agent deletes a job's working_dir the other runs in.
    # Short paths: Ray's socket paths must fit in 107 characters.
    temp_dirs = [tempfile.mkdtemp(prefix=f"sr{n}-", dir="/tmp") for n in "hw"]
    head_log, worker_log = open(logs / "head.log", "w"), open(logs / "worker.log", "w")  # noqa: SIM115
    head = subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "true",
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                             "--ray-client-server-port", str(procs.free_port()),
                             "--resources", '{"head_node": 1}', "--temp-dir", temp_dirs[0], *own_ports(), *common],
                            stdout=head_log, stderr=subprocess.STDOUT, env=env)
    worker = None
    try:
        procs.wait_for_port(dash, head, timeout=120)
        worker = subprocess.Popen([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--resources",
                                   '{"worker_node": 1}', "--temp-dir", temp_dirs[1], *own_ports(), *common],
                                  stdout=worker_log, stderr=subprocess.STDOUT, env=env)
        _wait_for_nodes(f"http://127.0.0.1:{dash}", 2, worker)
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "logs": logs}
    finally:
        procs.stop(worker, head, timeout=60)
        head_log.close()
        worker_log.close()
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _wait_for_nodes(dashboard: str, n: int, proc, timeout: float = 120.0) -> None:
    import time

    import httpx

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("a Ray node exited while the cluster was starting")
        try:
            nodes = httpx.get(f"{dashboard}/nodes?view=summary", timeout=5).json()["data"]["summary"]
            if sum(1 for node in nodes if node.get("raylet", {}).get("state") == "ALIVE") >= n:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"the cluster did not reach {n} nodes in {timeout:.0f} s")
