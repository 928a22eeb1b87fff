"""Wall time and throughput per stage, as the pipeline runs."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from selectray.resources import return_freed_memory


@dataclass
class StageTimer:
    """Wall time and throughput per stage; prints one summary line when a stage ends."""

    stages: dict[str, dict] = field(default_factory=dict)
    quiet: bool = False

    @contextmanager
    def stage(self, name: str, rows: int | None = None):
        info: dict = {"rows": rows}
        start = time.perf_counter()
        yield info
        seconds = time.perf_counter() - start
        # What the stage freed goes back to the system: the driver then holds only what later
        # stages keep (at 1M rows ~0.1 GB after the read and again after the embed stage).
        return_freed_memory()
        info["seconds"] = round(seconds, 3)
        if info.get("rows"):
            info["rows_per_second"] = round(info["rows"] / max(seconds, 1e-9), 1)
        self.stages[name] = info
        if not self.quiet:
            note = " (reused checkpoint)" if info.get("reused") else ""
            detail = f" {info['summary']}" if info.get("summary") else ""
            r = info.get("rows_per_second")
            rate = "" if r is None else f", {r:,.0f} rows/s" if r >= 10 else f", {r:.2f} rows/s"
            print(f"[{name}]{detail} {seconds:.1f} s{rate}{note}", flush=True)
