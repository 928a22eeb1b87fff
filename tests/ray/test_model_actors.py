"""Model code inside Ray workers: the SelectIT scorer as a Ray Data actor, torch threads per actor."""

import os

import numpy as np
import torch

from selectray.prompts import RATING_PROMPTS
from selectray.resources import use_cpu_threads
from selectray.stages.scorer import SelectITScorer


def test_scorer_runs_as_a_ray_data_actor(ray_local, tiny_llama_dir, tiny, rating_rows, prompts_for, reference_probs):
    import ray.data

    rows = [{"id": f"r{i}", "instruction": r[0], "input": r[1], "output": r[2]} for i, r in enumerate(rating_rows[:4])]
    out = (
        ray.data.from_items(rows)
        .map_batches(
            SelectITScorer,
            fn_constructor_kwargs={"model": tiny_llama_dir, "device": "cpu", "layout": "sample-first"},
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        .to_pandas()
        .sort_values(["id", "prompt_index"])
    )
    assert len(out) == 4 * len(RATING_PROMPTS) and set(out["model"]) == {tiny_llama_dir}
    want = reference_probs(tiny, prompts_for(rating_rows[:4], "sample-first"))
    np.testing.assert_allclose(out[[f"p{i}" for i in range(1, 6)]].to_numpy(dtype=float), want, atol=1e-4)


def test_cpu_threads_share_the_node_not_rays_one_per_cpu(ray_local):
    import ray

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        assert use_cpu_threads(3, 1) == 3 and torch.get_num_threads() == 3
        assert use_cpu_threads(None, 1) == cores
        assert use_cpu_threads(None, cores * 4) == 1
    finally:
        torch.set_num_threads(before)

    @ray.remote(num_cpus=1)
    def in_a_worker():
        before = torch.get_num_threads()  # Ray's default: OMP_NUM_THREADS = reserved CPUs
        return before, use_cpu_threads(None, 1), torch.get_num_threads()

    ray_default, chosen, after = ray.get(in_a_worker.remote())
    assert ray_default == 1 and chosen == after == len(ray.get(ray.remote(lambda: os.sched_getaffinity(0)).remote()))
