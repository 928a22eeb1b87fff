"""Stage throughputs of earlier runs, kept per hardware, for `selectray plan`'s time estimates.

Each run appends, for every stage that did work, the work done per second of wall time
(stage time includes start-up such as model loading, so small runs read pessimistic) to
`<selectray cache>/throughput.json` (`$SELECTRAY_CACHE`, else ~/.cache/selectray), keyed
by a description of the hardware and by what the speed depends on (`rate_keys`). Units:

    read      input rows            embed   rows embedded        kcenter  rows x centers
    score     (row, prompt) pairs   pick    rater requests

A failure to read or write the history never fails a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np

FILE = "throughput.json"
KEEP = 8  # measurements kept per (hardware, key)
UNITS = {"read": "rows", "embed": "rows", "kcenter": "row-centers", "score": "pairs", "pick": "requests"}


def history_path() -> Path:
    from selectray.models.gguf import cache_root

    return cache_root() / FILE


def local_hardware(num_cpus: int | None = None) -> str:
    """This machine as a local Ray sees it: CPUs (the config's ray.num_cpus, else the usable
    cores) and CUDA devices by name."""
    from selectray.resources import cuda_available, usable_cpus

    cpus = num_cpus or usable_cpus()
    gpus: list[str] = []
    if cuda_available():
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if not gpus:
        return f"{cpus} CPU, no GPU"
    names = sorted(set(gpus))
    return f"{cpus} CPU, {len(gpus)} GPU ({', '.join(names)})"


def hardware_key(ray_cfg) -> str:
    """The hardware a run with this `ray` section uses: this machine, or the named cluster."""
    return local_hardware(ray_cfg.num_cpus) if ray_cfg.address is None else f"cluster {ray_cfg.address}"


def rate_keys(cfg) -> dict[str, str]:
    """stage -> what its speed depends on (the embedder, the rater models and prompt layout, ...)."""
    keys = {"read": "read", "embed": f"embed:{cfg.embed.model}", "kcenter": f"kcenter:{cfg.kcenter.mode}"}
    sit = getattr(cfg, "selectit", None)
    if sit is not None:
        keys["score"] = "score:" + "+".join(model_tag(m) for m in sit.models) + f":{sit.layout}"
    sl = getattr(cfg, "selectllm", None)
    if sl is not None:
        keys["pick"] = f"pick:{model_tag(sl.model)}:{sl.candidates}"
    return keys


def model_tag(spec) -> str:
    return f"{spec.name}/{spec.backend}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load(path: Path | None = None) -> dict:
    """{hardware: {key: [{"rate", "units", "seconds", "when"}, ...]}}; empty when missing or unreadable."""
    try:
        data = json.loads((path or history_path()).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def append(hardware: str, rates: dict[str, tuple[float, float]], path: Path | None = None) -> None:
    """Add measurements {key: (units, seconds)} for `hardware`, keeping the last KEEP per key."""
    path = path or history_path()
    with _locked(path):
        data = load(path)
        mine = data.setdefault(hardware, {})
        for key, (units, seconds) in rates.items():
            entries = mine.setdefault(key, [])
            entries.append({"rate": units / seconds, "units": units, "seconds": round(seconds, 3),
                            "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
            del entries[:-KEEP]
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def lookup(hardware: str, key: str, path: Path | None = None) -> tuple[float, float, int] | None:
    """(rate, fixed seconds, number of runs) from earlier runs on this hardware, or None.

    A stage's wall time is start-up (actors, model loading) plus work / rate, so with runs
    of different sizes a line `seconds = fixed + units / rate` is fitted (least squares);
    otherwise, or when the fit is not physical, the pooled rate (all units / all seconds).
    """
    entries = [e for e in load(path).get(hardware, {}).get(key) or []
               if isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) and e[k] > 0 for k in ("units", "seconds"))]
    if not entries:
        return None
    units = np.array([e["units"] for e in entries], float)
    seconds = np.array([e["seconds"] for e in entries], float)
    if len(set(units.tolist())) >= 2:
        slope, fixed = np.polyfit(units, seconds, 1)
        if slope > 0 and fixed >= 0:
            return float(1 / slope), float(fixed), len(entries)
    return float(units.sum() / seconds.sum()), 0.0, len(entries)


def run_work(ctx, stages: dict) -> dict[str, float]:
    """Work units each stage of a finished run did (stages that reused everything did none)."""
    work: dict[str, float] = {}
    if "read" in stages:
        work["read"] = ctx.pool.num_input
    e = ctx.embeddings
    if "embed" in stages and e is not None and e.computed:
        work["embed"] = e.computed
    c = ctx.clusters
    if "kcenter" in stages and c is not None and not c.reused:
        work["kcenter"] = float(ctx.pool.num_usable) * len(c.centers)
    if "score" in stages and ctx.scores is not None:
        work["score"] = sum(m.computed_pairs for m in ctx.scores.models)
    if "pick" in stages and ctx.picks is not None:
        work["pick"] = ctx.picks.stats.requests
    return {k: v for k, v in work.items() if v}


def record_run(ctx, stages: dict) -> None:
    """Append this run's stage throughputs to the history (never fails the run)."""
    try:
        keys = rate_keys(ctx.cfg)
        rates = {keys[s]: (units, stages[s]["seconds"]) for s, units in run_work(ctx, stages).items()
                 if s in keys and stages[s].get("seconds")}
        if rates:
            append(hardware_key(ctx.cfg.ray), rates)
    except Exception:  # noqa: BLE001 - the history is a convenience; a read-only home must not fail a run
        pass
