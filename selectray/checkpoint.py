"""Stage checkpoints: a folder of Parquet files that counts only once its manifest says so.

A stage writes into `<name>.tmp-<pid>/`, then writes `_manifest.json` there and renames
the folder into place. A folder without a manifest, with another fingerprint or
with a row count that does not match, is not trusted and is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

MANIFEST = "_manifest.json"


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (configs, input fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def parquet_rows(folder: Path) -> int:
    """Total rows of the Parquet files in a folder, from their footers only."""
    return sum(pq.read_metadata(f).num_rows for f in sorted(folder.glob("*.parquet")))


class Checkpoint:
    """One stage's output folder, keyed by a fingerprint of everything it depends on."""

    def __init__(self, folder: str | Path, key: str, **info: Any):
        self.folder = Path(folder)
        self.key = key
        self.info = info
        self.tmp = self.folder.with_name(f"{self.folder.name}.tmp-{os.getpid()}")

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self) -> bool:
        """True when the folder holds a finished result for this exact key."""
        m = self.manifest()
        if not m or m.get("key") != self.key:
            return False
        try:
            return parquet_rows(self.folder) == m.get("rows")
        except OSError:
            return False

    def begin(self) -> Path:
        """A fresh temporary folder to write the stage's files into."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def commit(self, **extra: Any) -> dict:
        """Seal the temporary folder with a manifest and move it into place."""
        manifest = {
            "key": self.key,
            "rows": parquet_rows(self.tmp),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **self.info,
            **extra,
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(self.folder, ignore_errors=True)
        self.tmp.rename(self.folder)
        return manifest
