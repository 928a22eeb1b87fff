"""A batch callable over the pool's blocks as plain Ray tasks: for stages with nothing to load.

A model stage runs its callable class on a Ray Data actor pool, which loads the model once
per actor. A callable that is cheap to build (the hash embedder: a fixed random matrix)
gains nothing from an actor and pays for one: a new worker process that imports torch, and
Ray Data's executor around it. Here each block is one task on the cluster's warm workers;
the task builds the callable, takes the block's rows at the wanted positions, and calls it
on slices of `batch_size` rows (docs/methods.md, "Speed"). A task whose worker dies is
retried by Ray, so the callable's side effects must be idempotent (checkpoint parts named
by the rows they hold are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from selectray.stages.read import gather, rows_at


@ray.remote
def _apply(block, fn_class: type, kwargs: dict, columns: list[str], positions, batch_size: int) -> pa.Table:
    """Build the callable once, call it on every slice of this block's wanted rows, join the results."""
    rows = rows_at(block, columns, positions)
    fn = fn_class(**kwargs)
    outs = [fn(rows.slice(start, batch_size)) for start in range(0, rows.num_rows, batch_size)]
    return pa.concat_tables(outs) if outs else pa.table({})


def map_blocks(pool, fn_class: type, kwargs: dict[str, Any], columns: list[str], positions: np.ndarray | None,
               batch_size: int, options: dict[str, Any], *, progress: bool = False, desc: str = "") -> list[pa.Table]:
    """`fn_class(**kwargs)` over the usable rows (`columns`; only `positions` when given), one task
    per block with `options` (selectray.resources.task_options); the outputs in block order."""
    wanted = None if positions is None else ray.put(np.asarray(positions, dtype=np.int64))
    task = _apply.options(name=f"{fn_class.__name__}-block", **options)  # the worker's title: ray::Embedder-block
    refs = [task.remote(b, fn_class, kwargs, columns, wanted, batch_size) for b in pool.blocks]
    return gather(refs, progress=progress, desc=desc, unit="block")
