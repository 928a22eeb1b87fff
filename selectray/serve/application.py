"""Building, starting and stopping the rater app: `start` deploys it from a run or from
`selectray serve` on the connected Ray; `app` is the application builder a Serve config
file names (`import_path: selectray.serve:app`, see jobs/serve_raters.yaml).

The API key is read from the environment where the app is built (the driver for `start`,
the cluster's build task for `serve deploy`); the ingress keeps only its SHA-256.
"""

# No `from __future__ import annotations`: Ray Serve reads the builder's annotation as a class.

import os

from pydantic import Field, ValidationError
from ray import serve

from selectray.errors import ConfigError
from selectray.resources import actor_options
from selectray.serve.deployments import RaterAPI, RaterModel, key_digest
from selectray.settings import ModelSpec, Section, ServeConfig, is_loopback

APP_NAME = "selectray-raters"

# A selection run sends thousands of requests: keep Serve's per-request lines out of the
# console (they stay in Ray's log files, /tmp/ray/session_latest/logs/serve/).
QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}


def api_key(cfg: ServeConfig, listening_host: str | None = None) -> str | None:
    """The key from `cfg.api_key_env` (None when unset); ConfigError when the app listens
    beyond loopback (`cfg.host` or the proxies' real host) without one."""
    key = os.environ.get(cfg.api_key_env) or None
    exposed = [h for h in (cfg.host, listening_host) if h and not is_loopback(h)]
    if key is None and exposed:
        raise ConfigError(f"the rater app would listen on {exposed[0]}, not a loopback address: set an API key "
                          f"in the environment variable {cfg.api_key_env} (serve.api_key_env)")
    return key


def build_app(models: list[ModelSpec], cfg: ServeConfig, *, gpus: bool, listening_host: str | None = None):
    """The application: a RaterModel deployment per model, bound into the RaterAPI ingress
    (with the API key of `cfg.api_key_env`, when set)."""
    key = api_key(cfg, listening_host)
    handles = {}
    for m in models:
        handles[m.name] = RaterModel.options(
            name=f"rater-{m.name}",
            autoscaling_config={"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                                "target_ongoing_requests": cfg.target_ongoing_requests},
            ray_actor_options=actor_options(m.resources(num_cpus=cfg.num_cpus), gpus),
        ).bind(m.model_dump(), cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.max_replicas)
    return RaterAPI.bind(handles, cfg.max_body_bytes, key_digest(key) if key else None)


class AppArgs(Section):
    """The `args` of the rater app in a Serve config file."""

    models: list[ModelSpec] = Field(..., min_length=1, description="Models to serve (a model entry each).")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The serve section (replicas, batching, key).")
    gpus: bool | None = Field(None, description="GPUs for the replicas; null: when the cluster has GPUs.")


def app(args: AppArgs):
    """Application builder for Serve config files and `serve run selectray.serve:app`.

    The HTTP host and port are the config file's `http_options`; the key is required when
    either `args.serve.host` or that host is not a loopback address.
    """
    import ray

    if not isinstance(args, AppArgs):
        try:
            args = AppArgs.model_validate(args)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "args"
            raise ConfigError(f"rater app args: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    gpus = args.gpus if args.gpus is not None else ray.cluster_resources().get("GPU", 0) > 0
    return build_app(args.models, args.serve, gpus=gpus, listening_host=_proxy_host())


def _proxy_host() -> str | None:
    """The host Serve's HTTP proxies listen on (the config file's http_options), when known."""
    import ray

    if not ray.is_initialized():  # asking the controller would start a Ray
        return None
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        return client.http_config.host if client is not None else None
    except Exception:  # noqa: BLE001 - no controller reachable: `args.serve.host` decides alone
        return None


def start(models: list[ModelSpec], cfg: ServeConfig, *, gpus: bool):
    """Deploy the app on the connected Ray cluster; returns the ingress deployment handle."""
    application = build_app(models, cfg, gpus=gpus)  # checks the key before Serve starts
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=QUIET_LOGS)
    return serve.run(application, name=APP_NAME, route_prefix="/", logging_config=QUIET_LOGS)


def stop() -> None:
    """Delete the app (Serve itself keeps running)."""
    serve.delete(APP_NAME)
