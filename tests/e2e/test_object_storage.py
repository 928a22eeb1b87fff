"""A run whose input and output live on an S3-compatible store (moto on 127.0.0.1): a full run,
a resume after an interruption, and a rescore, every file read back through s3://."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "selectray", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=900)


def _read_json(fs, path):
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def _dirs(fs, prefix):
    import pyarrow.fs as pafs

    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(prefix)) if i.type == pafs.FileType.Directory)


def _files(fs, prefix, suffix=""):
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=False, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


@pytest.mark.slow
def test_run_resume_and_rescore_on_object_storage(s3_server, tmp_path, clean_rows, tiny_llama_dir, root):
    fs, bucket, env = s3_server["fs"], s3_server["bucket"], s3_server["env"]
    with fs.open_output_stream(f"{bucket}/pool/rows.jsonl") as f:
        f.write("".join(json.dumps(r) + "\n" for r in clean_rows[:40]).encode())
    out = f"{bucket}/runs/selectit"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "input": f"s3://{bucket}/pool/rows.jsonl", "output": f"s3://{out}", "method": "selectit", "budget": 5,
        "embed": {"model": "hash", "batch_size": 10}, "selectit": {"models": [{"name": tiny_llama_dir, "batch_size": 8}]},
        "ray": {"num_cpus": 2, "progress": False},
    }))

    first = _cli(["run", "--config", str(config), "--quiet"], env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = _read_json(fs, f"{out}/report.json")
    assert report["output"] == f"s3://{out}" and report["selected"] == 5
    assert report["selectit"]["models"][tiny_llama_dir]["pairs_scored_this_run"] == 40 * 5
    with fs.open_input_file(f"{out}/selected.parquet") as f:
        selected = pq.read_table(f)
    assert selected.num_rows == 5 and selected["score_model"].to_pylist() == sorted(selected["score_model"].to_pylist(), reverse=True)
    assert _files(fs, f"{out}/embeddings", "_manifest.json")
    assert not os.path.exists(tmp_path / "s3:")  # nothing went to a local folder named after the URI

    # An interrupted run: one scored part and one embeddings part never recorded, no manifests.
    (key_dir,) = _dirs(fs, f"{out}/scores")  # one folder per model key
    score_records = _files(fs, f"{key_dir}/_parts", ".json")
    fs.delete_file(score_records[0])
    fs.delete_file(f"{key_dir}/_manifest.json")
    emb_records = _files(fs, f"{out}/embeddings/_parts", ".json")
    fs.delete_file(emb_records[0])
    fs.delete_file(f"{out}/embeddings/_manifest.json")
    second = _cli(["run", "--config", str(config), "--quiet"], env, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = _read_json(fs, f"{out}/report.json")
    pairs = resumed["selectit"]["models"][tiny_llama_dir]["pairs_scored_this_run"]
    assert 0 < pairs < 40 * 5 and pairs % 5 == 0  # only the rows of the unrecorded part
    assert 0 < resumed["stages"]["embed"]["computed_rows"] <= 10
    with fs.open_input_file(f"{out}/selected.parquet") as f:
        assert pq.read_table(f)["id"].to_pylist() == selected["id"].to_pylist()

    third = _cli(["rescore", "--config", str(config), "--alpha", "1.0", "--quiet"], env, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    rescored = _read_json(fs, f"{out}/report.json")
    assert rescored["selectit"]["alpha"] == 1.0
    assert rescored["selectit"]["models"][tiny_llama_dir]["pairs_scored_this_run"] == 0


def test_an_unusable_output_location_is_one_line_before_ray(s3_server, tmp_path, root):
    env = s3_server["env"]
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for output, needle in ((str(afile), "is a file"), ("s3://no-such-bucket-here/x", "cannot be written"),
                           ("nope://x", "output: cannot open")):
        proc = _cli(["run", "--config", str(root / "examples" / "demo.yaml"), "--output", output], env, root)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
