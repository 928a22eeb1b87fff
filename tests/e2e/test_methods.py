"""The k-center, SelectIT, hybrid and SelectLLM methods end to end on a local Ray."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from selectray.embeddings import read_embeddings
from selectray.kcenter import greedy_k_center
from selectray.pipeline import run


def _selected(out):
    return pq.read_table(out / "selected.parquet")


def test_kcenter_method_selects_the_greedy_centers_and_checkpoints(ray_local, tmp_path, make_cfg):
    report = run(make_cfg(tmp_path, method="kcenter", budget=12), quiet=True)
    out = tmp_path / "out"
    pos, vectors = read_embeddings(out / "embeddings")
    x = vectors[np.argsort(pos)]
    reference = greedy_k_center(x, 12)
    selected = _selected(out)
    ids = np.asarray(json.loads(json.dumps(selected["id"].to_pylist())))
    centers = pq.read_table(out / "kcenter" / "centers.parquet").sort_by("order")
    assert centers["pos"].to_pylist() == reference.centers.tolist()
    assert list(ids) == centers["id"].to_pylist()  # rank order = greedy order
    np.testing.assert_allclose(centers["radius"].to_numpy(), reference.radii, rtol=1e-6)
    assignment = pq.read_table(out / "kcenter" / "assignment.parquet").sort_by("pos")
    assert assignment.num_rows == report["input_rows"] - report["rejected"]
    # Every row's cluster is its nearest center (checked in float64 here).
    c = x[reference.centers].astype(np.float64)
    d = ((x.astype(np.float64)[:, None, :] - c[None]) ** 2).sum(-1)
    best = d.min(axis=1)
    chosen = d[np.arange(len(x)), assignment["cluster_id"].to_numpy()]
    np.testing.assert_allclose(chosen, best, rtol=1e-5, atol=1e-6)
    assert selected["cluster_id"].to_pylist() == list(range(12))
    assert report["kcenter"]["k"] == 12 and report["kcenter"]["radius"] == pytest.approx(reference.radii[-1])
    assert report["stages"]["kcenter"]["reused"] is False
    assert run(make_cfg(tmp_path, method="kcenter", budget=12), quiet=True)["stages"]["kcenter"]["reused"] is True


def test_kcenter_seeds_are_covered_not_selected(ray_local, tmp_path, make_cfg):
    seeds = ["ex-0000", "ex-0001"]
    run(make_cfg(tmp_path, method="kcenter", budget=5, kcenter={"seeds": seeds}), quiet=True)
    centers = pq.read_table(tmp_path / "out" / "kcenter" / "centers.parquet").sort_by("order")
    assert centers["id"].to_pylist()[:2] == seeds and centers["seed"].to_pylist() == [True, True] + [False] * 5
    picked = _selected(tmp_path / "out")["id"].to_pylist()
    assert len(picked) == 5 and not set(picked) & set(seeds)


def test_unknown_seed_id_is_a_clear_error(ray_local, tmp_path, make_cfg):
    with pytest.raises(Exception, match="not in the pool: nope"):
        run(make_cfg(tmp_path, method="kcenter", budget=5, kcenter={"seeds": ["nope"]}), quiet=True)


# SelectIT: a few rows with the real SmolLM2, shared by the tests below through one output folder.

def _token(p, normalization="code"):
    """SPEC 3.4 token level, written out plainly."""
    total = sum(p)
    if not (total > 0) or any(v != v for v in p):
        return 0.0
    rel = [v / total for v in p]
    if normalization == "code":
        e = [np.exp(r) for r in rel]
        q = [v / sum(e) for v in e]
    else:
        q = rel
    base = max(range(5), key=lambda i: (q[i], -i))
    return (base + 1) * sum(q[base] - qi for qi in q) / 4


def _levels_from_cache(out, alpha, normalization="code"):
    """score_model per row content hash, recomputed from the cached probabilities of the
    prompts the last run used (its manifest lists them; the cache may hold other prompts)."""
    import pyarrow as pa

    (folder,) = (out / "scores").iterdir()
    prompts = json.loads((folder / "_manifest.json").read_text())["prompts"]
    t = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))])
    by_row: dict = {}
    for r in t.to_pylist():
        if r["prompt_hash"] in prompts:
            by_row.setdefault(r["row_hash"], {})[r["prompt_hash"]] = _token([r[f"p{i}"] for i in range(1, 6)], normalization)
    assert all(len(s) == len(prompts) for s in by_row.values())
    return {h: np.mean(list(s.values())) / (1 + alpha * np.std(list(s.values()))) for h, s in by_row.items()}


@pytest.fixture(scope="module")
def scored(ray_local, tmp_path_factory, clean_rows, make_cfg, write_jsonl):
    tmp = tmp_path_factory.mktemp("selectit")
    rows = [dict(r) for r in clean_rows[:9]]
    rows.append({"id": "no-answer", "instruction": "Say something.", "input": "", "output": None})
    path = write_jsonl(tmp / "rows.jsonl", rows)
    c = make_cfg(tmp, input=str(path), method="selectit", budget=3, selectit={"models": [{"name": "smollm2-135m", "batch_size": 8}]},
            report={"coverage": False})
    return c, run(c, quiet=True)


@pytest.mark.slow
def test_selectit_scores_ranks_and_rejects_missing_output(scored):
    c, report = scored
    out = c.output_dir
    assert report["rejected_by_reason"] == {"missing_output": 1}
    sel = _selected(out)
    assert sel.num_rows == 3
    scores = sel["score_model"].to_pylist()
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    assert {f"score_token_smollm2-135m_p{k}" for k in range(5)} | {"score_sentence_smollm2-135m"} <= set(sel.column_names)
    expected = _levels_from_cache(out, alpha=0.2)
    from selectray.stages.validate import content_hash
    for r in sel.to_pylist():
        assert r["score_model"] == pytest.approx(expected[content_hash(r["instruction"], r["input"], r["output"])], abs=1e-9)
    assert report["selectit"]["models"]["smollm2-135m"]["pairs_scored_this_run"] == 9 * 5


@pytest.mark.slow
def test_selectit_rerun_and_rescore_use_the_cache(scored):
    c, first = scored
    before = _selected(c.output_dir)["score_model"].to_pylist()
    again = run(c, quiet=True)
    assert again["selectit"]["models"]["smollm2-135m"]["pairs_scored_this_run"] == 0
    assert _selected(c.output_dir)["score_model"].to_pylist() == before  # bit for bit from the cache
    rescored = run(c.model_copy(update={"selectit": c.selectit.model_copy(update={"alpha": 1.0})}), quiet=True, rescore=True)
    assert rescored["selectit"]["alpha"] == 1.0
    expected = _levels_from_cache(c.output_dir, alpha=1.0)
    from selectray.stages.validate import content_hash
    for r in _selected(c.output_dir).to_pylist():
        assert r["score_model"] == pytest.approx(expected[content_hash(r["instruction"], r["input"], r["output"])], abs=1e-9)


@pytest.mark.slow
def test_editing_one_prompt_recomputes_only_that_prompt(scored):
    from selectray.prompts import RATING_PROMPTS

    c, _ = scored
    prompts = list(RATING_PROMPTS)
    prompts[2] = "Score the response from 1 to 5 for how well it does what was asked. Answer with one digit."
    edited = c.model_copy(update={"selectit": c.selectit.model_copy(update={"prompts": prompts})})
    report = run(edited, quiet=True)
    assert report["selectit"]["models"]["smollm2-135m"]["pairs_scored_this_run"] == 9


@pytest.mark.slow
def test_hybrid_takes_the_best_scored_rows_of_each_cluster(scored):
    c, _ = scored
    hybrid = c.model_copy(update={"method": "hybrid", "budget": 4, "hybrid": c.hybrid.model_copy(update={"num_clusters": 2})})
    report = run(hybrid, quiet=True)
    assert report["selectit"]["models"]["smollm2-135m"]["pairs_scored_this_run"] == 0  # scores come from the cache
    sel = _selected(c.output_dir)
    assert sel.num_rows == 4
    assignment = pq.read_table(c.output_dir / "kcenter" / "assignment.parquet")
    cluster_of = dict(zip(assignment["id"].to_pylist(), assignment["cluster_id"].to_pylist()))
    expected = _levels_from_cache(c.output_dir, alpha=0.2)
    rows = {r["id"]: r for r in pq.read_table(c.output_dir / "selected.parquet").to_pylist()}
    sizes = np.bincount([v for v in cluster_of.values() if v >= 0], minlength=2)
    per_cluster = np.bincount([cluster_of[i] for i in rows], minlength=2)
    assert (per_cluster >= 1).all() and per_cluster.sum() == 4 and (per_cluster <= sizes).all()
    assert abs(per_cluster[0] - 4 * sizes[0] / sizes.sum()) <= 1  # proportional to size
    # Within each cluster, no unselected row scores higher than a selected one.
    from selectray.stages.validate import content_hash
    pool = [json.loads(line) for line in Path(c.input[0]).read_text().splitlines()]
    for cl in range(2):
        chosen = [expected[content_hash(r["instruction"], r["input"], r["output"])] for r in rows.values() if cluster_of[r["id"]] == cl]
        others = [expected[content_hash(r["instruction"], r["input"], r["output"])] for r in pool
                  if r["output"] and r["id"] not in rows and cluster_of.get(r["id"]) == cl]
        assert min(chosen) >= max(others, default=-np.inf)


@pytest.mark.slow
def test_selectllm_picks_one_row_per_cluster(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl):
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:60])
    report = run(make_cfg(tmp_path, input=str(path), method="selectllm", budget=6,
                     selectllm={"candidates": 5, "max_in_flight": 4}, serve={"num_cpus": 0.5, "max_replicas": 1},
                     report={"coverage": False}), quiet=True)
    sel = _selected(tmp_path / "out")
    assert sel.num_rows == 6
    assert len(set(sel["cluster_id"].to_pylist())) == 6
    stats = report["selectllm"]
    assert stats["requests"] == 6 and stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    # SmolLM2 answers every one of these six prompts with a valid identifier (greedy decoding
    # of fixed prompts): no group falls back.
    assert stats["fallbacks"] == 0 and stats["chosen_by"] == {"rater": 6}
    assert sel["picked_by"].to_pylist() == ["rater"] * 6


def _fixed_rater(answer: str):
    """An OpenAI-style server on 127.0.0.1 that answers every completion with `answer` and keeps
    the prompts it was sent. Returns (url, prompts, stop)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    prompts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body: dict):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "fixed-rater", "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body.get("prompt") or body["messages"][-1]["content"]
            prompts.append(prompt)
            usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
            if "messages" in body:
                self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": f"[{answer}]"},
                                         "finish_reason": "stop"}], "usage": usage})
            else:
                self._send({"choices": [{"index": 0, "text": answer, "finish_reason": "stop"}], "usage": usage})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(10)

    return f"http://127.0.0.1:{server.server_address[1]}", prompts, stop


def _candidates(prompt: str) -> list[str]:
    import re

    return [m.group(2) for m in re.finditer(r"^\[(\d+)\] (.*)$", prompt, flags=re.M)]


def test_selectllm_selects_exactly_the_candidates_the_rater_names(ray_local, tmp_path, clean_rows, make_cfg,
                                                                   write_jsonl):
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:60])
    url, prompts, stop = _fixed_rater("3")
    try:
        report = run(make_cfg(tmp_path, input=str(path), method="selectllm", budget=6, report={"coverage": False},
                              selectllm={"url": url, "model": {"name": "fixed-rater"}, "candidates": 5}), quiet=True)
    finally:
        stop()
    assert len(prompts) == 6 == report["selectllm"]["requests"]
    sel = _selected(tmp_path / "out")
    by_text = {" ".join(r["instruction"].split())[:80]: r for r in sel.to_pylist()}
    named = 0
    for prompt in prompts:
        shown = _candidates(prompt)
        if len(shown) >= 3:  # the third candidate shown, exactly: not the second, not the fourth
            row = by_text[shown[2][:80]]
            assert row["picked_by"] == "rater"
            named += 1
        else:  # "[3]" names no candidate of a smaller group: its fallback, counted
            assert any(by_text.get(c[:80], {}).get("picked_by") == "unparsable" for c in shown)
    assert report["selectllm"]["chosen_by"].get("rater", 0) == named
    assert sum(report["selectllm"]["chosen_by"].values()) == 6


def test_selectllm_kmeans_regions_picks_the_named_candidate_of_each_region(ray_local, tmp_path, clean_rows, make_cfg,
                                                                          write_jsonl):
    # The grouping is under test here, not the rater (SmolLM2 behind Ray Serve picks in the test
    # above): a fixed rater on 127.0.0.1 names the first candidate of every region.
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:40])
    url, prompts, stop = _fixed_rater("1")
    try:
        report = run(make_cfg(tmp_path, input=str(path), method="selectllm", budget=4, report={"coverage": False},
                              selectllm={"url": url, "model": {"name": "fixed-rater"}, "grouping": "kmeans-regions",
                                         "candidates": 4}), quiet=True)
    finally:
        stop()
    sel = _selected(tmp_path / "out")
    assert sel.num_rows == 4 and len(set(sel["id"].to_pylist())) == 4
    assert report["selectllm"]["requests"] == 4 == len(prompts)
    assert len(set(sel["cluster_id"].to_pylist())) == 4  # one row from each of the four regions
    firsts = {" ".join(_candidates(p)[0].split())[:80] for p in prompts}
    assert {" ".join(r.split())[:80] for r in sel["instruction"].to_pylist()} == firsts
    assert sel["picked_by"].to_pylist() == ["rater"] * 4


@pytest.mark.slow
def test_selectllm_survives_a_killed_replica(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl):
    import threading
    import time

    import ray
    from ray import serve

    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:80])
    c = make_cfg(tmp_path, input=str(path), method="selectllm", budget=8,
            selectllm={"candidates": 6, "max_in_flight": 4, "retries": 6},
            serve={"num_cpus": 0.5, "min_replicas": 2, "max_replicas": 2}, report={"coverage": False})
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(report=run(c, quiet=True)))
    worker.start()
    killed = None
    deadline = time.time() + 600
    while killed is None and worker.is_alive() and time.time() < deadline:
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if "rater-smollm2" in a["name"] and "REPLICA" in a["name"].upper()]
        app = serve.status().applications.get("selectray-raters")
        if len(replicas) == 2 and app is not None and app.status == "RUNNING":
            time.sleep(3)  # the pick stage is sending requests by now
            ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
            killed = replicas[0]["name"]
        time.sleep(0.2)
    worker.join(timeout=900)
    assert killed is not None, "no replica to kill was found"
    report = result["report"]
    assert report["selected"] == 8
    assert _selected(tmp_path / "out").num_rows == 8
    stats = report["selectllm"]
    assert stats["retries"] + stats["failed_requests"] >= 1  # the kill did hit requests in flight


def test_a_method_added_in_a_test_runs_end_to_end(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl, monkeypatch):
    from pydantic import Field

    from selectray.methods import METHODS, Method
    from selectray.settings import Section
    from selectray.stages.selection import Selection

    class ShortestSettings(Section):
        """Shortest-first baseline."""

        max_chars: int = Field(10_000, gt=0, description="Rows longer than this are never selected.")

    class Shortest(Method):
        name = "shortest"
        summary = "the shortest rows first"
        settings = ShortestSettings

        def select(self, ctx, usable):
            ok = usable & (ctx.lengths <= ctx.cfg.shortest.max_chars)
            order = np.lexsort((np.arange(len(ctx.lengths)), ctx.lengths))
            return Selection(order[ok[order]][: ctx.budget], {"chars": ctx.lengths})

        def report(self, ctx, selection, figures):
            return {"shortest": {"max_chars": ctx.cfg.shortest.max_chars}}

    monkeypatch.setitem(METHODS, "shortest", Shortest())
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows)
    report = run(make_cfg(tmp_path, input=str(path), method="shortest", budget=5, shortest={"max_chars": 5000},
                          report={"coverage": False}), quiet=True)
    assert report["shortest"] == {"max_chars": 5000} and "embed" not in report["stages"]
    length = {r["id"]: len(r["instruction"]) + len(r["input"] or "") + len(r["output"] or "") for r in clean_rows}
    expected = sorted(length, key=lambda i: (length[i], [r["id"] for r in clean_rows].index(i)))[:5]
    sel = _selected(tmp_path / "out")
    assert sel["id"].to_pylist() == expected and sel["chars"].to_pylist() == [length[i] for i in expected]


def test_a_hub_model_is_pinned_to_a_commit_and_a_moved_branch_is_rescored(ray_local, tmp_path, clean_rows, make_cfg,
                                                                          write_jsonl, hub_model):
    repo = hub_model["repo"]
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:6])
    c = make_cfg(tmp_path, input=str(path), method="selectit", budget=2, report={"coverage": False},
                 selectit={"models": [{"name": repo}]})
    first = run(c, quiet=True)
    assert first["selectit"]["models"][f"{repo}@{hub_model['first']}"]["pairs_scored_this_run"] == 6 * 5
    assert run(c, quiet=True)["selectit"]["models"][f"{repo}@{hub_model['first']}"]["pairs_scored_this_run"] == 0
    try:
        hub_model["move_main"](hub_model["second"])
        moved = run(c, quiet=True)
    finally:
        hub_model["move_main"](hub_model["first"])
    assert moved["selectit"]["models"][f"{repo}@{hub_model['second']}"]["pairs_scored_this_run"] == 6 * 5
