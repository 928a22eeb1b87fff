"""End to end: `selectray run` on a generated pool, timed per stage, with its memory measured.

    .venv/bin/python benchmarks/bench_pipeline.py --rows 1000000 --only kcenter
    .venv/bin/python benchmarks/bench_pipeline.py --rows 100000 --only random
    .venv/bin/python benchmarks/bench_pipeline.py --rows 5000000 --only kcenter --set embed.dtype=float16

The pool (`selectray generate`, Parquet, 1 % bad rows) is written once and cached under
--cache/pool-<rows>-seed<seed>. Each run is `python -m selectray run` as a subprocess:

* kcenter:      method kcenter, budget 1,000, the hash embedder, otherwise the defaults;
* random:       method random, budget 1,000, the defaults (MiniLM embedder, report.coverage on);
* random-nocov: method random, budget 1,000, report.coverage false (no embedding at all).

Ray Data progress bars are off (ray.progress false); everything else is the default config.
For each run it prints the wall time, each stage's seconds and rows/s (from report.json), and
memory sampled every 0.2 s: the machine's used memory (MemTotal - MemAvailable) minus the
same before the run, so object-store pages shared by several processes count once; the peak
RSS of the driver (the `selectray run` process) and the peak summed RSS of its descendants
(Ray workers and Ray's own processes; their anonymous RSS alone excludes mapped object-store
pages); and each as bytes per input row. The machine may be shared: the used-memory figure
then includes other processes' changes, so the load average is printed too. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^\[([a-z_]+)\] ")  # "[embed] 992000 vectors ...", printed as a stage ends
GOALS = {  # at 1,000,000 rows on this machine (2 cores): wall seconds, peak bytes
    "kcenter": (60, 3e9),
    "random": (90, None),
    "random-nocov": (20, None),
}
RUNS = {
    "kcenter": {"method": "kcenter", "embed": {"model": "hash"}},
    "random": {"method": "random"},
    "random-nocov": {"method": "random", "report": {"coverage": False}},
}


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def used_bytes() -> int:
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's processes and workers that the driver started)."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process in bytes; zeros once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except OSError:
        return 0, 0
    get = lambda k: int(fields.get(k, "0 kB").split()[0]) * 1024  # noqa: E731
    return get("VmRSS"), get("RssAnon")


class Sampler(threading.Thread):
    """Peaks of the machine's used memory (over a baseline) and of the run's processes, every 0.2 s."""

    def __init__(self, pid: int, baseline: int, min_available: int, lines: list[str]):
        super().__init__(daemon=True)
        self.lines, self.peak_after = lines, "none yet"  # the run's output; the last stage done at the peak
        self.pid, self.baseline, self.stop = pid, baseline, threading.Event()
        self.min_available, self.low_memory = min_available, False
        self.peak = {"machine": 0, "driver": 0, "driver_anon": 0, "workers": 0, "workers_anon": 0, "shmem": 0}
        self.shmem0 = meminfo()["Shmem"]
        self.seen: dict[int, str] = {}  # pid -> start time, of every process the run started

    def run(self) -> None:
        while not self.stop.wait(0.2):
            m = meminfo()
            self.low_memory |= m["MemAvailable"] < self.min_available
            procs = descendants(self.pid)
            for p in procs:
                if p not in self.seen and (t := _start_time(p)):
                    self.seen[p] = t
            d, d_anon = rss(self.pid)
            w = [rss(p) for p in procs]
            now = {"machine": m["MemTotal"] - m["MemAvailable"] - self.baseline, "driver": d, "driver_anon": d_anon,
                   "workers": sum(x[0] for x in w), "workers_anon": sum(x[1] for x in w), "shmem": m["Shmem"] - self.shmem0}
            if now["machine"] > self.peak["machine"]:
                done = [m.group(1) for line in list(self.lines) if (m := STAGE_LINE.match(line))]
                self.peak_after = done[-1] if done else "none yet"
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)


def git_state() -> str:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return f"{git('log', '-1', '--oneline')}; {len(git('status', '--short').splitlines())} changed files"


def pool(rows: int, seed: int, cache: Path) -> list[str]:
    """The generated pool's files, written on first use."""
    from selectray.generate import MANIFEST, write_pool

    folder = cache / f"pool-{rows}-seed{seed}"
    manifest = folder / MANIFEST
    if manifest.exists():
        summary = json.loads(manifest.read_text())
        print(f"pool: {folder} (cached; {summary['planted_total']:,} planted bad rows)")
    else:
        start = time.perf_counter()
        summary = write_pool(folder, rows, seed=seed, overwrite=True)
        seconds = time.perf_counter() - start
        print(f"pool: generated {rows:,} rows in {len(summary['files'])} files, {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
              f"({summary['planted_total']:,} planted bad rows) -> {folder}")
    return [str(folder / f) for f in summary["files"]]


def run_one(name: str, files: list[str], rows: int, args, work: Path) -> dict | str | None:
    import yaml

    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = {"input": files, "output": str(out), "budget": 1000, "seed": args.seed, "ray": {"progress": False}, **RUNS[name]}
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "selectray", "run", "--config", str(cfg_path)]
    for item in args.set:
        cmd += ["--set", item]
    print(f"\n=== {name}: {' '.join(cmd[2:])} {' '.join(f'{k}={v}' for k, v in RUNS[name].items())}")
    baseline = used_bytes()
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    sampler = Sampler(proc.pid, baseline, int(args.min_available * 1e9), lines)
    sampler.start()
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None and time.perf_counter() - start < args.timeout and not sampler.low_memory:
        time.sleep(0.2)
    if proc.poll() is None:
        why = f"the machine's available memory fell below {args.min_available} GB" if sampler.low_memory else f"timed out after {args.timeout} s"
        print(f"{why}: stopping the run (pid {proc.pid}) and the processes it started")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    reader.join(timeout=5)
    if proc.returncode != 0:
        stop_leftovers(sampler.seen)
    for line in lines:
        if line.startswith("[") or " input rows = " in line or "error" in line.lower():
            print("  | " + line.rstrip())
    report_path = out / "report.json"
    if proc.returncode != 0 and any("timed out during startup" in line for line in lines[-5:]):
        return "ray did not start"
    if proc.returncode != 0 or not report_path.exists():
        print(f"FAILED (exit {proc.returncode}) after {wall:.1f} s; last output:")
        for line in lines[-15:]:
            print("  | " + line.rstrip())
        result = None
    else:
        result = json.loads(report_path.read_text())
    show(name, rows, wall, sampler.peak, result, load0, sampler.peak_after)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def stop_leftovers(seen: dict[int, str]) -> None:
    """After a failed or stopped run: end the processes it started that are still there, by id
    (the same id and start time as seen during the run, so never a reused id)."""
    time.sleep(5)
    for pid, started in seen.items():
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                print(f"  stopped leftover process {pid}")
            except OSError:
                pass


def show(name: str, rows: int, wall: float, peak: dict, report: dict | None, load0: float, peak_after: str) -> None:
    gb = 1e9
    if report:
        for stage, info in report["stages"].items():
            rate = info.get("rows_per_second")
            print(f"  {stage:<10} {info['seconds']:8.1f} s" + (f"  {rate:>12,.0f} rows/s" if rate else ""))
        print(f"  rows: {report['input_rows']:,} = {report['selected']:,} selected + {report['not_selected']:,} "
              f"not selected + {report['rejected']:,} rejected")
    if report:
        other = wall - sum(info["seconds"] for info in report["stages"].values())
        print(f"  {'other':<10} {other:8.1f} s  (outside the stages: start-up, building report.json/html, shutdown)")
    print(f"  wall {wall:.1f} s ({rows / wall:,.0f} input rows/s); load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"  peak memory, machine used - before: {peak['machine'] / gb:.2f} GB = {peak['machine'] / rows:,.0f} B/row "
          f"(shared memory, mostly Ray's object store: {peak['shmem'] / gb:.2f} GB); reached when the last stage done was [{peak_after}]")
    print(f"  peak RSS driver {peak['driver'] / gb:.2f} GB = {peak['driver'] / rows:,.0f} B/row "
          f"(anonymous {peak['driver_anon'] / gb:.2f} GB); workers and Ray processes, summed: "
          f"{peak['workers'] / gb:.2f} GB = {peak['workers'] / rows:,.0f} B/row (anonymous {peak['workers_anon'] / gb:.2f} GB "
          f"= {peak['workers_anon'] / rows:,.0f} B/row)")
    goal_s, goal_b = GOALS[name]
    scale = rows / 1e6
    verdict = ""
    if rows == 1_000_000 and report:
        ok = wall <= goal_s and (goal_b is None or peak["machine"] <= goal_b)
        verdict = " -> met" if ok else " -> missed"
    mem = f", <= {goal_b / gb:.0f} GB peak" if goal_b else ""
    print(f"  goal at 1,000,000 rows: <= {goal_s} s wall{mem}{verdict}"
          + ("" if rows == 1_000_000 else f" (this run: {rows / 1e6:g}M rows; wall x {1 / scale:g} = {wall / scale:.0f} s)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=list(RUNS), help="run only this configuration")
    ap.add_argument("--keep", action="store_true", help="keep the runs' output folders (the pool is always cached)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every `selectray run`")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "selectray-bench"), help="pool cache folder")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run before it is stopped")
    ap.add_argument("--min-available", type=float, default=2.0,
                    help="stop a run when the machine's available memory falls below this many GB (a shared machine)")
    args = ap.parse_args()

    print(f"git: {git_state()}; {os.cpu_count()} CPUs, {meminfo()['MemTotal'] / 1e9:.1f} GB memory, "
          f"load average {os.getloadavg()[0]:.1f}")
    cache = Path(args.cache)
    files = pool(args.rows, args.seed, cache)
    work = cache / f"runs-{args.rows}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only else list(RUNS):
        for _attempt in range(3):  # Ray gives a local node 30 s to start; on a busy machine that can fail
            if run_one(name, files, args.rows, args, work) != "ray did not start":
                break
            print("Ray's node did not start in time (machine busy); trying again in 30 s")
            time.sleep(30)


if __name__ == "__main__":
    main()
