"""Benchmark: exact greedy k-center against the naive and lean baselines, same run.

    python benchmarks/bench_kcenter.py                       # N=100,000, d=384, k=200
    python benchmarks/bench_kcenter.py --k 2000
    python benchmarks/bench_kcenter.py --n 1000000 --k 10000 # baselines extrapolated

Data: an L2-normalised Gaussian mixture, written as an embeddings checkpoint
(Parquet with id, pos, embedding; files in shuffled order) without ever holding all
vectors in this process. Methods:

* naive: the seed reference's way, sklearn `pairwise_distances` from every row to
  each new center;
* gemv: a lean loop, one float32 matrix-vector product per center;
* greedy_k_center: this package, one process;
* distributed_k_center: this package, `--shards` Ray actors reading the checkpoint
  (run first, so the driver's peak memory is that of the distributed run).

Baselines whose estimated time exceeds --baseline-budget seconds run only their
first centers and are extrapolated linearly (their cost per center is constant);
the output says so. The package's results must equal each other exactly; a baseline
must agree with them, except that after a near-tie (relative gap in squared distance
< 1e-5, the precision of float32) the sequences may part, which is checked and shown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from selectray.kcenter import distributed_k_center, exact_sq_dist, greedy_k_center

NEAR_TIE = 1e-5
CHUNK = 50_000


# ---------------------------------------------------------------------------- data


def mixture_chunk(start: int, n: int, d: int, components: int, sigma: float, seed: int) -> np.ndarray:
    """Rows start..start+n of the mixture; any chunk can be regenerated on its own."""
    means = np.random.default_rng(seed).standard_normal((components, d)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, start])
    label = rng.integers(0, components, n)
    x = means[label] + rng.standard_normal((n, d), dtype=np.float32) * np.float32(sigma / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_checkpoint(folder: Path, n: int, d: int, components: int, sigma: float, seed: int) -> None:
    """Embeddings checkpoint of the mixture, one file per CHUNK rows, names shuffled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    starts = list(range(0, n, CHUNK))
    names = np.random.default_rng(seed).permutation(len(starts))
    for name, s in zip(names, starts, strict=True):
        x = mixture_chunk(s, min(CHUNK, n - s), d, components, sigma, seed)
        pos = np.arange(s, s + len(x), dtype=np.int64)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)
        table = pa.table({"id": pa.array([f"row-{p}" for p in pos]), "pos": pos, "embedding": emb})
        pq.write_table(table, folder / f"part-{name:05d}.parquet")


def load_checkpoint(folder: Path, n: int, d: int) -> np.ndarray:
    import pyarrow.parquet as pq

    x = np.empty((n, d), np.float32)
    for f in folder.glob("*.parquet"):
        t = pq.read_table(f)
        x[t["pos"].to_numpy()] = t["embedding"].combine_chunks().values.to_numpy().reshape(-1, d)
    return x


# ---------------------------------------------------------------------------- baselines


def naive(x: np.ndarray, k: int, budget: float) -> tuple[list[int], float, int]:
    """The seed reference: sklearn pairwise_distances against the whole set per center."""
    from sklearn.metrics import pairwise_distances

    return _loop(x, k, budget, lambda c: pairwise_distances(x, x[c : c + 1]).ravel() ** 2)


def gemv(x: np.ndarray, k: int, budget: float) -> tuple[list[int], float, int]:
    """Lean float32 loop: one matrix-vector product per center, precomputed norms."""
    norms = np.einsum("ij,ij->i", x, x)

    def dist(c):
        d = x @ x[c]
        d *= -2.0
        d += norms
        d += norms[c]
        return d

    return _loop(x, k, budget, dist)


def _loop(x, k, budget, dist) -> tuple[list[int], float, int]:
    """Plain greedy from row 0; stops early past `budget` seconds. (centers, seconds, centers run)."""
    f = np.full(len(x), np.inf, np.float32)
    centers = [0]
    t0 = time.perf_counter()
    for _ in range(k):
        np.minimum(f, dist(centers[-1]), out=f)
        f[centers] = -1.0
        if len(centers) == k or time.perf_counter() - t0 > budget:
            break
        centers.append(int(np.argmax(f)))
    return centers, time.perf_counter() - t0, len(centers)


def check_agreement(x: np.ndarray, ours: np.ndarray, theirs: list[int], name: str) -> str:
    """Same centers, or parting only at a near-tie; returns a one-line verdict."""
    n = min(len(ours), len(theirs))
    differ = np.flatnonzero(ours[:n] != np.asarray(theirs[:n]))
    if len(differ) == 0:
        return f"{name}: same {n} centers"
    t = int(differ[0])
    pair = np.asarray([ours[t], theirs[t]])
    prior = x[ours[:t]]
    d = [exact_sq_dist(np.broadcast_to(x[p], prior.shape), prior).min() for p in pair]
    gap = abs(d[0] - d[1]) / max(d)
    assert gap < NEAR_TIE, f"{name} parts from greedy at center {t} without a tie (relative gap {gap:.2e})"
    return f"{name}: same first {t} centers, then a near-tie (relative gap {gap:.1e}) sends them apart"


# ---------------------------------------------------------------------------- machine


def matmul_gflops(d: int) -> dict[str, float]:
    """float32 matmul speed of this machine, now: square, and the k-center shape."""
    rng = np.random.default_rng(0)
    out = {}
    for name, (m, kk, n) in {"square 4096": (4096, 4096, 4096), f"2048x{d} @ {d}x512": (2048, d, 512)}.items():
        a = rng.standard_normal((m, kk), dtype=np.float32)
        b = rng.standard_normal((kk, n), dtype=np.float32)
        a @ b
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            reps = 1 if m == 4096 else 20
            for _ in range(reps):
                a @ b
            best = min(best, (time.perf_counter() - t) / reps)
        out[name] = 2.0 * m * kk * n / best / 1e9
    return out


def ray_processes_rss(exclude: str = "ShardActor", wait: float = 20.0) -> int:
    """Current RSS of the processes this driver started (Ray's raylet, GCS, agents, idle
    workers), once the killed shard actors' processes are gone (they report their own peak)."""
    import psutil

    end = time.time() + wait
    while True:
        children = psutil.Process().children(recursive=True)
        names = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                names.append(" ".join(child.cmdline()))
        if not any(exclude in n for n in names) or time.time() > end:
            break
        time.sleep(0.5)
    total = 0
    for child in children:
        with contextlib.suppress(psutil.Error):  # it may have exited meanwhile
            if exclude not in " ".join(child.cmdline()):
                total += child.memory_info().rss
    return total


def best_of(repeat: int, fn):
    """(best seconds, last result) over `repeat` runs: the machine is shared, noise only adds."""
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--lookahead", type=int, default=None, help="candidates per pass (default: the package's)")
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--sigma", type=float, default=1.0, help="within-component spread (before normalising)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each package method; the best counts")
    ap.add_argument("--baseline-budget", type=float, default=60.0, help="seconds per baseline before extrapolating")
    ap.add_argument("--skip-single", action="store_true", help="skip greedy_k_center in this process")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--write-checkpoint", type=Path, help=argparse.SUPPRESS)  # internal: child process
    args = ap.parse_args(argv)
    if args.write_checkpoint:
        return write_checkpoint(args.write_checkpoint, args.n, args.d, args.components, args.sigma, args.seed)

    import ray

    size = args.n * args.d * 4
    print(f"N={args.n:,} d={args.d} k={args.k:,} shards={args.shards}; embeddings {size / 2**30:.2f} GiB float32")
    print(f"Gaussian mixture: {args.components} components, sigma={args.sigma}, L2-normalised; {os.cpu_count()} CPUs")
    tmp = Path(tempfile.mkdtemp(prefix="bench_kcenter_"))
    try:
        # Written by a child process, so this process never holds the vectors before the
        # distributed run and its peak memory is that of the run.
        t = time.perf_counter()
        given = sys.argv[1:] if argv is None else argv
        subprocess.run([sys.executable, __file__, *given, "--write-checkpoint", str(tmp)], check=True)
        print(f"checkpoint written in {time.perf_counter() - t:.1f} s ({len(list(tmp.glob('*.parquet')))} files)")

        ray.init(num_cpus=max(2, args.shards), include_dashboard=False, log_to_driver=False)
        time.sleep(2)  # let Ray's own processes settle before measuring them
        system_before = ray_processes_rss()
        runs = []

        def distributed():
            r = distributed_k_center(
                tmp, args.k, num_shards=args.shards, lookahead=args.lookahead, progress=args.progress,
                stats_memory=True,
            )
            runs.append(r)
            return r

        load_before = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        t_dist, dist = best_of(args.repeat, distributed)
        load_after = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        t_compute = min(r.stats["seconds"] for r in runs)
        driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        shards_peak = max(sum(r.stats["peak_rss_bytes_shards"]) for r in runs)
        system = max(system_before, ray_processes_rss())
        ray.shutdown()

        x = load_checkpoint(tmp, args.n, args.d)
        results = {}
        if not args.skip_single:
            t_single, single = best_of(
                args.repeat, lambda: greedy_k_center(x, args.k, lookahead=args.lookahead, progress=args.progress)
            )
            results["greedy_k_center (1 process)"] = (t_single, args.k)
            assert np.array_equal(single.centers, dist.centers), "sharded and single-process centers differ"
            assert np.array_equal(single.radii, dist.radii), "sharded and single-process radii differ"
            same = np.mean(single.assignment == dist.assignment)
            print(f"distributed == single process: same centers and radii; same assignment for {same:.4%} of rows")
        results[f"distributed_k_center ({args.shards} actors)"] = (t_dist, args.k)
        results["  of which k-center after start-up"] = (t_compute, args.k)
        gflops = matmul_gflops(args.d)

        verdicts = []
        for name, fn in (("naive (sklearn pairwise_distances)", naive), ("lean GEMV loop", gemv)):
            centers, secs, done = fn(x, args.k, args.baseline_budget)
            results[name] = (secs, done)
            verdicts.append(check_agreement(x, dist.centers, centers, name))

        print()
        ref_s = _full(results["naive (sklearn pairwise_distances)"], args.k)
        gemv_s = _full(results["lean GEMV loop"], args.k)
        print(f"{'method':42s} {'seconds':>10s} {'vs naive':>9s} {'vs GEMV':>9s}")
        for name, (secs, done) in results.items():
            full = _full((secs, done), args.k)
            note = f"  (extrapolated from {done} of {args.k} centers)" if done < args.k else ""
            print(f"{name:42s} {full:10.3f} {ref_s / full:8.1f}x {gemv_s / full:8.2f}x{note}")
        print()
        for v in verdicts:
            print(v)
        st = dist.stats
        per_pass = st["centers_per_pass"]
        print(
            f"\npasses: {dist.passes} for k={args.k:,} (centers per pass: {per_pass[:14]}"
            f"{' ...' if len(per_pass) > 14 else ''}); lookahead {st['lookahead']}"
        )
        busy = [round(sum(v.values()), 1) for v in st["shard_seconds"]]
        cpu = [round(c, 1) for c in st["shard_cpu_seconds"]]
        print(
            f"distributed: start-up and reading {st['seconds_startup']:.2f} s, k-center {st['seconds']:.2f} s "
            f"(waiting on shards {st['seconds_shards']:.2f} s, driver {st['seconds_driver']:.2f} s; "
            f"shards busy {busy} s, shard processes' CPU time {cpu} s), exact resolutions {st['exact_resolved']}"
        )
        print(f"load average before / after the distributed run: {load_before} / {load_after}")
        flops = 2.0 * args.n * args.d * args.k  # every center meets every row once
        print(
            f"achieved {flops / t_compute / 1e9:.1f} GFLOP/s in the k-center part ({flops / t_dist / 1e9:.1f} "
            "end to end; 2*N*d*k); machine: "
            + ", ".join(f"numpy matmul {k} {v:.1f} GFLOP/s" for k, v in gflops.items())
        )
        total = driver_peak + shards_peak + system
        print(
            f"peak memory: driver {driver_peak / 2**30:.2f} GiB + actors {shards_peak / 2**30:.2f} GiB + Ray's own "
            f"processes {system / 2**30:.2f} GiB (RSS before/after the run) = {total / 2**30:.2f} GiB"
            f" = {total / size:.2f}x the embeddings"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _full(run: tuple[float, int], k: int) -> float:
    secs, done = run
    return secs * k / done


if __name__ == "__main__":
    sys.exit(main())
