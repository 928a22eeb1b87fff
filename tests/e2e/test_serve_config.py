"""The rater app from its Serve config file: `serve deploy` of jobs/serve_raters.yaml (its
ports and host moved to free ports on 127.0.0.1) on a dedicated Ray head that the test starts
as a child process with its own ports and temp dir and ends by process id; and `selectray
serve` refusing an exposed host without a key before it starts anything."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "sr-deploy-test-4c7d1a"


def _variant(tmp: Path, http_port: int) -> Path:
    """jobs/serve_raters.yaml on 127.0.0.1 at `http_port`, one replica."""
    config = yaml.safe_load((ROOT / "jobs" / "serve_raters.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=http_port)
    (app,) = config["applications"]
    assert app["import_path"] == "selectray.serve:app" and app["args"]["models"][0]["name"] == "smollm2-135m"
    app["args"]["serve"].update(host="127.0.0.1", min_replicas=1, max_replicas=1)
    path = tmp / "serve_raters.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _app_status(dashboard: str) -> tuple[str, str]:
    try:
        apps = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json().get("applications") or {}
    except (httpx.HTTPError, ValueError):
        return "UNREACHABLE", ""
    app = apps.get("selectray-raters") or {}
    return app.get("status", "NOT_STARTED"), app.get("message", "")


def _leftovers(marker: str) -> list[int]:
    """Processes whose command line names this test's Ray temp dir (only ours carry it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_serve_deploy_of_the_job_config_on_a_dedicated_head(tmp_path, server_tools):
    t = server_tools
    ports = {k: t.free_port() for k in ("port", "dashboard-port", "ray-client-server-port", "node-manager-port",
                                        "object-manager-port", "dashboard-agent-listen-port",
                                        "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")}
    http_port = t.free_port()
    config = _variant(tmp_path, http_port)
    temp_dir = tempfile.mkdtemp(prefix="srh-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DASHBOARD_ADDRESS")}
    env["SELECTRAY_API_KEY"] = KEY  # in the head's environment, where the app is built
    env["RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT"] = "300"  # the dashboard (serve deploy's API) on a busy machine
    head_cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "4",
                "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--min-worker-port", "0", "--max-worker-port", "0", "--temp-dir", temp_dir, "--disable-usage-stats",
                *[x for k, v in ports.items() for x in (f"--{k}", str(v))]]
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    base = f"http://127.0.0.1:{http_port}"
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(head_cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        t.wait_for_port(ports["dashboard-port"], head, timeout=300)
        deploy = subprocess.run([str(BIN / "serve"), "deploy", str(config), "-a", dashboard], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stderr[-2000:]
        status, message = "NOT_STARTED", ""
        deadline = time.time() + 600  # a hang guard, not a speed check
        while status != "RUNNING" and time.time() < deadline:
            assert head.poll() is None, "the Ray head exited"
            assert status != "DEPLOY_FAILED", message
            time.sleep(2)
            status, message = _app_status(dashboard)
        assert status == "RUNNING", (status, message)

        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(f"{base}/healthz", timeout=60).json()["models"] == ["smollm2-135m"]
        models = httpx.get(f"{base}/v1/models", headers=auth, timeout=60).json()["data"]
        assert [m["id"] for m in models] == ["smollm2-135m"] and models[0]["chat_template"] is True
        r = httpx.post(f"{base}/v1/completions", headers=auth, timeout=300,
                       json={"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] and r.json()["usage"]["completion_tokens"] >= 1
        r = httpx.get(f"{base}/v1/models", timeout=60)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401  # the key the head's environment holds
        logs = [f for f in Path(temp_dir).rglob("*") if f.suffix in (".log", ".out", ".err") and f.is_file()]
        assert logs and not [f for f in logs if KEY.encode() in f.read_bytes()]
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "-a", dashboard, "-y"], env=env, capture_output=True,
                       timeout=120, cwd=tmp_path)
        t.stop_process(head, timeout=60)
        log.close()
        left = _leftovers(temp_dir)
        end = time.time() + 60
        while left and time.time() < end:
            time.sleep(1)
            left = _leftovers(temp_dir)
        for pid in left:  # started by this test's head: end them by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test's Ray head outlived it: {left}"


def test_selectray_serve_refuses_an_exposed_host_without_a_key(tmp_path, demo_pool):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(json.dumps({"input": str(demo_pool["path"]), "method": "selectllm",
                               "serve": {"host": "0.0.0.0", "api_key_env": "SELECTRAY_TEST_ABSENT_KEY"}}))
    env = {k: v for k, v in os.environ.items() if k != "SELECTRAY_TEST_ABSENT_KEY"}
    out = subprocess.run([sys.executable, "-m", "selectray", "serve", "--config", str(cfg)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "serve.host 0.0.0.0 is not a loopback address" in lines[0], out.stderr
    assert "SELECTRAY_TEST_ABSENT_KEY" in lines[0] and "Ray" not in out.stderr + out.stdout  # nothing started
