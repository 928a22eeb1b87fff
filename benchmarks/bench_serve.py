"""Ray Serve rater app overhead: /v1/completions (1 token) against the backend in-process.

    .venv/bin/python benchmarks/bench_serve.py [--prompts 64] [--clients 1,4,16]
        [--requests-per-client 0] [--max-batch-size 16] [--threads 2] [--runs 2] [--no-handle]

All paths send the same SelectIT rating prompts (the paper layout, built with
`build_rating_prompt` over rows of `examples/make_pool.py`, keeping the rows whose prompt
is 150-300 tokens) to the embedded SmolLM2-135M, asking for 1 greedy token, and measure
requests/s and per-request latency p50/p95 at each client count c:

  * in-process (the baseline): `make_backend("transformers", ...)` in this process,
    `backend.complete(batch, max_tokens=1)` called on consecutive batches of c requests,
    one after the other. This is what one Serve replica does with c concurrent clients
    when every batch fills up (serve.batch gathers the c pending requests into one backend
    call): the throughput of the model itself at that batch size, with no queueing, no
    serialization, no HTTP. A request's latency is the time of its batch call.
    requests/s = requests / total time of the batch calls.
  * serve-http: the app of `selectray.serve.start` (one replica, `max_batch_size`, the
    ingress deployment and Serve's HTTP proxy) on a local `ray.init(num_cpus=2)`;
    c asyncio clients (one httpx.AsyncClient), each sending its requests back to back;
    latency = POST to parsed JSON response; requests/s = requests / wall time from the
    first send to the last response.
  * serve-handle (at the largest c): the same, through the ingress deployment handle
    (`handle.completions.remote(body)`) instead of HTTP: the difference to serve-http is
    the cost of the HTTP hop (proxy + JSON).

Request r = j * c + k (client k's j-th request) uses prompt r mod N, so round j of the c
clients carries the same prompts as the in-process batch j; by default every client count
sends each prompt once (--requests-per-client 0: ceil(N / c) each).

The machine is shared: every measurement is repeated --runs times, the paths interleaved
(in-process, serve-http, serve-handle, at each c in turn), and each table row is the run
with the highest requests/s. "ratio" is that row's requests/s over the best in-process
requests/s at the same c; "paired" the median over the rounds of the ratio to the
in-process run measured just before it (robust to slow drifts of the machine's load).
The goal (issue #5) is a Serve (HTTP) ratio >= 0.7 at 16 clients.

Same arithmetic on both sides: the replica's backend gets batch_size = --max-batch-size
(one forward pass per Serve batch, like the baseline), and torch uses --threads threads in
both processes. Ray sets OMP_NUM_THREADS of an actor to its num_cpus when it is unset, and
the ingress deployment reserves 1 CPU by default, so on a 2-CPU Ray the replica could get
only 1 CPU (1 torch thread) against 2 in-process: this script exports OMP_NUM_THREADS before
starting Ray (workers inherit it), gives the replica num_cpus=1, and checks the replica's
OMP_NUM_THREADS (which sets torch's thread count) and its CPU use from /proc.

It asserts that every path returns the same generated token for each prompt as the
in-process unbatched call (greedy), prints the table, the load average, the replica's
OMP_NUM_THREADS, the cores busy in the replica, ingress and HTTP proxy processes during
each Serve row, the average Serve batch size (estimated from the response times: the
requests of one batch finish together) and whether the 0.7 goal was reached. Serve and
Ray are shut down at the end. Numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "smollm2-135m"
GOAL = 0.7
MIN_TOKENS, MAX_TOKENS = 150, 300


class Run:
    """One measurement: per-request latencies (s), wall time (s), text per prompt index."""

    def __init__(self, path: str, clients: int):
        self.path, self.clients = path, clients
        self.lat: list[float] = []
        self.texts: dict[int, str] = {}
        self.done_at: list[float] = []  # completion times (s, perf_counter), for batch estimates
        self.wall = 0.0
        self.cpu: dict[str, float] = {}  # process role -> cores busy on average

    @property
    def rps(self) -> float:
        return len(self.lat) / self.wall

    def pct(self, q: float) -> float:
        s = sorted(self.lat)
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] * 1000


def paired(runs: dict[tuple[str, int], list[Run]], key: tuple[str, int]) -> float:
    """Median over the runs of key's requests/s over the in-process run of the same round."""
    base = runs[("in-process", key[1])]
    return statistics.median(r.rps / b.rps for r, b in zip(runs[key], base))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_prompts(n: int, backend) -> list[str]:
    """n deterministic SelectIT rating prompts (paper layout) of 150-300 tokens."""
    from make_pool import make_rows

    from selectray.prompts import RATING_PROMPTS, build_rating_prompt

    prompts: list[str] = []
    rows = make_rows(40 * n, seed=7)
    for start in range(0, len(rows), 256):
        texts = []
        for r in rows[start : start + 256]:
            prefix, suffix = build_rating_prompt(RATING_PROMPTS[len(texts) % len(RATING_PROMPTS)],
                                                 r["instruction"], r["input"], r["output"])
            texts.append(prefix + suffix)
        for text, k in zip(texts, backend.count_tokens(texts)):
            if MIN_TOKENS <= k <= MAX_TOKENS and text not in prompts:
                prompts.append(text)
        if len(prompts) >= n:
            return prompts[:n]
    raise SystemExit(f"only {len(prompts)} distinct prompts of {MIN_TOKENS}-{MAX_TOKENS} tokens; ask for fewer")


def schedule(c: int, per_client: int, n_prompts: int) -> list[list[int]]:
    """Prompt indices of each client: request r = j * c + k uses prompt r mod N."""
    return [[(j * c + k) % n_prompts for j in range(per_client)] for k in range(c)]


def run_inprocess(backend, prompts: list[str], c: int, per_client: int) -> Run:
    run = Run("in-process", c)
    order = [(j * c + k) % len(prompts) for j in range(per_client) for k in range(c)]
    for i in range(0, len(order), c):
        idx = order[i : i + c]
        t0 = time.perf_counter()
        out = backend.complete([prompts[p] for p in idx], max_tokens=1)
        dt = time.perf_counter() - t0
        run.wall += dt
        run.lat += [dt] * len(idx)
        run.done_at += [t0 + dt] * len(idx)
        for p, comp in zip(idx, out):
            run.texts[p] = comp.text
    return run


async def _drive(path: str, send, prompts: list[str], c: int, per_client: int) -> Run:
    """c concurrent clients, each sending its requests back to back through `send`."""
    run = Run(path, c)

    async def client(indices: list[int]) -> None:
        for p in indices:
            t0 = time.perf_counter()
            text = await send({"model": MODEL, "prompt": prompts[p], "max_tokens": 1})
            t1 = time.perf_counter()
            run.lat.append(t1 - t0)
            run.done_at.append(t1)
            if run.texts.setdefault(p, text) != text:
                raise AssertionError(f"{path}: prompt {p} gave {text!r} and {run.texts[p]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(client(ix) for ix in schedule(c, per_client, len(prompts))))
    run.wall = time.perf_counter() - start
    return run


def run_http(url: str, prompts: list[str], c: int, per_client: int) -> Run:
    import httpx

    async def main() -> Run:
        limits = httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

            async def send(body: dict) -> str:
                r = await http.post("/v1/completions", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text}")
                return r.json()["choices"][0]["text"]

            return await _drive("serve-http", send, prompts, c, per_client)

    return asyncio.run(main())


def run_handle(handle, prompts: list[str], c: int, per_client: int) -> Run:
    async def send(body: dict) -> str:
        return (await handle.completions.remote(body))["choices"][0]["text"]

    return asyncio.run(_drive("serve-handle", send, prompts, c, per_client))


def serve_processes() -> dict[str, int]:
    """pids of the Serve processes of this benchmark's local Ray, by role."""
    import psutil

    roles = {"replica": "ServeReplica:selectray-raters:rater-", "ingress": "ServeReplica:selectray-raters:_RaterAPI",
             "proxy": "ProxyActor"}
    found: dict[str, int] = {}
    me = psutil.Process()
    for proc in me.children(recursive=True):  # Ray's raylet is started by this process
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for role, key in roles.items():
            if cmd.startswith("ray::") and key in cmd:
                found.setdefault(role, proc.pid)
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for role, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[role] = t.user + t.system
        except psutil.Error:
            pass
    return out


def measured(fn, pids: dict[str, int]) -> Run:
    """fn() -> Run, with the CPU use (cores busy on average) of the Serve processes attached."""
    before = cpu_seconds(pids)
    run = fn()
    after = cpu_seconds(pids)
    run.cpu = {r: (after[r] - before[r]) / run.wall for r in before if r in after}
    return run


def batch_estimate(run: Run) -> float:
    """Average requests per replica batch, from the completion times: the requests of one
    batch finish within a few ms of each other, batches at least a forward pass apart."""
    gap_s = max(0.02, 0.25 * min(run.lat))
    t = sorted(run.done_at)
    batches = 1 + sum(1 for a, b in zip(t, t[1:]) if b - a > gap_s)
    return len(t) / batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64, help="distinct prompts (150-300 tokens)")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--requests-per-client", type=int, default=0,
                    help="requests each client sends; 0: ceil(prompts / clients), each prompt once")
    ap.add_argument("--max-batch-size", type=int, default=16, help="Serve batch size (and backend batch size)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, in-process and in the replica")
    ap.add_argument("--runs", type=int, default=2, help="repeat every measurement (interleaved), keep the best")
    ap.add_argument("--no-handle", action="store_true", help="skip the deployment-handle run")
    args = ap.parse_args()
    clients = sorted({int(x) for x in args.clients.split(",") if x.strip()})
    if not clients or min(clients) < 1:
        raise SystemExit("--clients: positive integers, e.g. 1,4,16")

    # Before torch and Ray start: both this process and every Ray worker (the replica
    # included) read it; Ray only sets OMP_NUM_THREADS to num_cpus where it is unset.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import psutil
    import ray
    import torch

    from selectray import serve as rater_app
    from selectray.backends import make_backend
    from selectray.settings import ModelSpec, ServeConfig

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backend = make_backend("transformers", MODEL, batch_size=args.max_batch_size)
    prompts = make_prompts(args.prompts, backend)
    lens = backend.count_tokens(prompts)
    load0 = os.getloadavg()
    print(f"{MODEL}: {len(prompts)} prompts of {min(lens)}-{max(lens)} tokens (mean {sum(lens) / len(lens):.0f}), "
          f"max_tokens=1, Serve max_batch_size={args.max_batch_size}, torch threads={torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, load average {load0[0]:.2f}", flush=True)
    for c in (1, max(clients)):  # warm-up: the first calls of each batch shape are slow
        run_inprocess(backend, prompts, c, 1)

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    runs: dict[tuple[str, int], list[Run]] = {}
    try:
        from ray import serve

        cfg = ServeConfig(port=free_port(), min_replicas=1, max_replicas=1, max_batch_size=args.max_batch_size,
                          num_cpus=1)
        handle = rater_app.start([ModelSpec(name=MODEL, batch_size=args.max_batch_size)], cfg, gpus=False)
        # Serve's HTTP options are fixed once Serve runs in a cluster: use the port it really has.
        url = f"http://127.0.0.1:{serve.context._get_global_client().http_config.port}"
        pids = serve_processes()
        replica_env = psutil.Process(pids["replica"]).environ() if "replica" in pids else {}
        # Warm-up of each path: the first requests, then one full round at the most clients.
        run_http(url, prompts, 1, 2)
        run_http(url, prompts, max(clients), 1)
        if not args.no_handle:
            run_handle(handle, prompts, max(clients), 1)
        print(f"  Serve up and warm after {time.perf_counter() - t0:.0f} s", flush=True)

        # Interleaved, --runs times: a burst of load from elsewhere hits one run, not one path.
        for rep in range(args.runs):
            for c in clients:
                per = args.requests_per_client or math.ceil(len(prompts) / c)
                todo = [("in-process", lambda c=c, per=per: run_inprocess(backend, prompts, c, per)),
                        ("serve-http", lambda c=c, per=per: run_http(url, prompts, c, per))]
                if c == max(clients) and not args.no_handle:
                    todo.append(("serve-handle", lambda c=c, per=per: run_handle(handle, prompts, c, per)))
                for path, fn in todo:
                    run = measured(fn, pids)
                    runs.setdefault((path, c), []).append(run)
                    print(f"  run {rep + 1}/{args.runs} c={c} {path}: {run.rps:.2f} req/s, "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        try:
            rater_app.stop()
            serve.shutdown()
        finally:
            ray.shutdown()

    # The best run of each path (highest requests/s): the least disturbed by other load.
    best = {key: max(rs, key=lambda r: r.rps) for key, rs in runs.items()}
    ref: dict[int, str] = {}
    for r in runs.get(("in-process", 1), []):
        ref.update(r.texts)
    missing = sorted({p for rs in runs.values() for r in rs for p in r.texts} - set(ref))
    for p in missing:  # unbatched in-process reference for prompts the c=1 runs did not send
        ref[p] = backend.complete([prompts[p]], max_tokens=1)[0].text
    # Same greedy token for the same prompt on every path.
    bad = [(r.path, r.clients, p, t, ref[p]) for rs in runs.values() for r in rs for p, t in r.texts.items()
           if t != ref[p]]
    base = {c: r.rps for (path, c), r in best.items() if path == "in-process"}
    order = {"in-process": 0, "serve-http": 1, "serve-handle": 2}
    keys = sorted(best, key=lambda k: (k[1], order[k[0]]))
    print(f"\nbest of {args.runs} run(s) per row; ratio: requests/s over in-process at the same clients "
          f"(paired: median over runs of the ratio to the in-process run just before it)")
    print(f"{'clients':>7}  {'path':<13}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'ratio':>7}{'paired':>8}")
    for key in keys:
        r = best[key]
        print(f"{r.clients:>7}  {r.path:<13}{len(r.lat):>9}{r.rps:>9.2f}{r.pct(0.5):>9.0f}{r.pct(0.95):>9.0f}"
              f"{r.rps / base[r.clients]:>7.2f}{paired(runs, key):>8.2f}")
    load1 = os.getloadavg()
    print(f"\nload average (1 min) {load0[0]:.2f} at start, {load1[0]:.2f} at end; whole run {time.perf_counter() - t0:.0f} s")
    omp = replica_env.get("OMP_NUM_THREADS", "unset (Ray sets it to the replica's num_cpus)")
    print(f"replica: OMP_NUM_THREADS={omp} (torch's thread count there); in-process torch threads {args.threads}")
    for key in keys:
        r = best[key]
        if r.path == "in-process":
            continue
        busy = ", ".join(f"{role} {v:.2f}" for role, v in sorted(r.cpu.items()))
        batch = f"; ~{batch_estimate(r):.1f} requests per Serve batch (from response times)" if r.clients > 1 else ""
        print(f"  {r.path} c={r.clients}: cores busy: {busy}{batch}")
    if bad:
        for b in bad[:10]:
            print(f"  MISMATCH {b[0]} c={b[1]} prompt {b[2]}: {b[3]!r}, in-process unbatched {b[4]!r}")
        raise AssertionError(f"{len(bad)} responses differ from the in-process greedy token")
    n_checked = len({p for rs in runs.values() for r in rs for p in r.texts})
    print(f"same greedy token as in-process (unbatched) for all {n_checked} prompts on every path and run")
    top = max(clients)
    ratio = best[("serve-http", top)].rps / base[top]
    verdict = "reached" if ratio >= GOAL else "NOT reached"
    print(f"goal: Serve (HTTP) >= {GOAL} x in-process requests/s at {top} clients: {verdict} "
          f"(ratio {ratio:.2f}, paired {paired(runs, ('serve-http', top)):.2f})")

if __name__ == "__main__":
    main()
