"""Embed stage throughput: the Ray Data actor-pool stage against plain SentenceTransformer loops.

    .venv/bin/python benchmarks/bench_embed.py [--rows 1000] [--runs 2]

All three embed the same rows with the bundled all-MiniLM-L6-v2 in one process run:
  * baseline: a plain loop of `model.encode(batch)` over batches of 64 in input order
    (how a simple script does it; every batch is padded to its longest row);
  * one call: a single `model.encode(all_rows)` in-process (sorts by length; no Ray);
  * selectray: the Ray Data embed stage (actor pool, batches of 512 sorted by length
    inside each call), timed end to end including actor start-up and model load.
It asserts the vectors agree and prints rows/s and ratios against the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2, help="repeat each measurement, keep the best")
    ap.add_argument("--batch-size", type=int, default=512, help="rows per Ray Data batch")
    args = ap.parse_args()

    import pyarrow as pa
    import ray
    import ray.data
    import torch
    from make_pool import make_rows
    from sentence_transformers import SentenceTransformer

    from selectray.columns import EMBEDDING
    from selectray.stages.embed import Embedder, embedding_text, l2_normalise, resolve_embedder

    rows = make_rows(args.rows, seed=3)
    texts = [embedding_text(r["instruction"], r["input"]) for r in rows]
    path = resolve_embedder("all-MiniLM-L6-v2")
    print(f"{len(texts)} rows, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")

    def plain_loop():
        model = SentenceTransformer(path, device="cpu")
        model.max_seq_length = 256
        return np.concatenate([model.encode(texts[i:i + 64], batch_size=64) for i in range(0, len(texts), 64)])

    def one_call():
        model = SentenceTransformer(path, device="cpu")
        model.max_seq_length = 256
        return model.encode(texts, batch_size=64)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    table = pa.table({"id": [r["id"] for r in rows], "pos": np.arange(len(rows)),
                      "instruction": [r["instruction"] for r in rows], "input": [r["input"] for r in rows]})

    def ray_stage():
        ds = ray.data.from_arrow(table).map_batches(
            Embedder,
            fn_constructor_kwargs={"model": path, "instruction_col": "instruction", "input_col": "input"},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=os.cpu_count()),
            batch_size=args.batch_size,
            batch_format="pyarrow",
        )
        out = ds.to_arrow_refs()
        result = pa.concat_tables(ray.get(out)).sort_by("pos")
        col = result[EMBEDDING].combine_chunks()
        return col.values.to_numpy().reshape(len(result), -1)

    timings = {}
    vectors = {}
    for name, fn in (("baseline: encode loop, batches of 64", plain_loop),
                     ("one encode call, in-process", one_call),
                     ("selectray Ray Data stage", ray_stage)):
        best = float("inf")
        for _ in range(args.runs):
            start = time.perf_counter()
            vectors[name] = fn()
            best = min(best, time.perf_counter() - start)
        timings[name] = best

    ref = l2_normalise(np.asarray(vectors["baseline: encode loop, batches of 64"], dtype=np.float32))
    for name, v in vectors.items():
        err = np.abs(l2_normalise(np.asarray(v, dtype=np.float32)) - ref).max()
        assert err < 1e-4, f"{name} disagrees with the baseline by {err}"
    base = timings["baseline: encode loop, batches of 64"]
    print(f"{'method':40s} {'seconds':>8s} {'rows/s':>8s} {'vs baseline':>12s}")
    for name, t in timings.items():
        print(f"{name:40s} {t:8.2f} {len(texts) / t:8.1f} {base / t:11.2f}x")
    print("vectors agree within 1e-4")
    ray.shutdown()


if __name__ == "__main__":
    main()
