"""Models named by Hugging Face hub id: `org/name`, optionally `org/name@revision`.

The driver pins every hub id of a run to a commit before any work (`pin_models`:
metadata only, no weights), so every node loads the same files and a branch that moves
between runs is a new model (the commit is part of the fingerprint and so of every
cache key). The node that loads a pinned model downloads that exact commit
(`download`). huggingface_hub's own settings apply: `HF_TOKEN`, `HF_HOME` /
`HF_HUB_CACHE` and `HF_HUB_OFFLINE` (an offline resolution reads the local cache); they
are read when called, so a run's environment (forwarded to its workers) decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from selectray.errors import ConfigError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubRef:
    """A hub repository and the revision asked for (a branch, tag or commit; None: main)."""

    repo: str
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        return self.revision is not None and bool(_COMMIT.match(self.revision))

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}" if self.revision else self.repo


def parse_hub_id(name: str) -> HubRef | None:
    """The hub reference a model name stands for, or None (a local path that exists, or not an id)."""
    m = _HUB_ID.match(name)
    if m is None or Path(name).expanduser().exists():
        return None
    return HubRef(m["repo"], m["rev"])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def resolve_commit(ref: HubRef) -> str:
    """The commit `ref` points at now: asked of the hub (metadata only), or read from the
    local cache when offline. A missing or misspelt model is a one-line ConfigError."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        if _offline():
            path = snapshot_download(ref.repo, revision=ref.revision, cache_dir=_cache_dir(), local_files_only=True)
            return Path(path).name
        return HfApi().model_info(ref.repo, revision=ref.revision).sha
    except GatedRepoError:
        raise ConfigError(f"model '{ref}' is gated on the Hugging Face hub: accept its terms and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise ConfigError(f"model '{ref}': the hub has no revision '{ref.revision}' of {ref.repo}") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"model '{ref}' is not on the Hugging Face hub (misspelt, private without HF_TOKEN, "
                          "or not a local path either)") from None
    except LocalEntryNotFoundError:
        raise ConfigError(f"model '{ref}' is not in the local hub cache and HF_HUB_OFFLINE is set "
                          f"(cache: {_cache_dir() or 'huggingface_hub default'})") from None
    except OSError as e:
        raise ConfigError(f"model '{ref}': cannot reach the Hugging Face hub ({str(e).splitlines()[0]})") from None


def pin(name: str) -> str:
    """`name` with its hub revision replaced by the commit it points at (other names unchanged)."""
    ref = parse_hub_id(name)
    if ref is None or ref.pinned:
        return name
    return f"{ref.repo}@{resolve_commit(ref)}"


def download(ref: HubRef) -> Path:
    """The local folder of a pinned hub model, downloaded on first use (on the node that loads it)."""
    from huggingface_hub import snapshot_download

    if not ref.pinned:
        raise ConfigError(f"model '{ref}' must be pinned to a commit before loading")
    try:
        return Path(snapshot_download(ref.repo, revision=ref.revision, cache_dir=_cache_dir(), local_files_only=_offline()))
    except Exception as e:  # noqa: BLE001 - any hub failure here is the same user-facing error
        raise ConfigError(f"cannot download model '{ref}': {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
