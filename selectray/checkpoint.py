"""Stage checkpoints, one scheme for embeddings, k-center and scores.

A checkpoint is a folder of parts, each written whole and then recorded; a manifest
written last seals the folder:

    <name>.parquet         the data of one part, written whole
    _parts/<name>.json     its record, written after the data: {key, file, rows, ...}
    _manifest.json         written last: {key, settings, parts, rows, ...}

A part counts once its record exists and names the checkpoint's key (a fingerprint
of the stage's input and settings). A sealed folder (a manifest with this key whose
parts are all present) is reused as is; a partial one is resumed part by part: the
stage computes only what the recorded parts lack. Data files without a record (a
writer cut short) and parts of another key are removed when the folder is sealed.
Nothing is renamed, so the same scheme works on a shared filesystem and on object
storage (see `selectray.storage`). Writers may be Ray workers: a Checkpoint pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from selectray.storage import Location

MANIFEST = "_manifest.json"
RECORDS = "_parts"


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (settings, input fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class Part:
    """One recorded part: its data file (a name inside the folder), row count and extra info."""

    file: str
    rows: int
    info: dict = field(default_factory=dict)


class Checkpoint:
    """One stage's folder, keyed by a fingerprint of everything its content depends on."""

    def __init__(self, folder: Location | str, key: str, **settings: Any):
        self.folder = folder if isinstance(folder, Location) else Location(folder)
        self.key = key
        self.settings = settings

    def __reduce__(self):
        return _restore, (self.folder.uri, self.key, self.settings)

    # ---- reading
    def manifest(self) -> dict | None:
        """The sealing manifest, when there is one for this key."""
        try:
            m = (self.folder / MANIFEST).read_json()
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) and m.get("key") == self.key else None

    def is_sealed(self) -> bool:
        """True when the folder holds a finished result for this exact key."""
        m = self.manifest()
        if m is None:
            return False
        present = {f.name for f in self.folder.list()}
        return all(p["file"] in present for p in m.get("parts", []))

    def parts(self) -> list[Part]:
        """Recorded parts of this key whose data file is present, sorted by file name."""
        present = {f.name for f in self.folder.list()}
        out = []
        for rec in (self.folder / RECORDS).list(".json"):
            try:
                r = rec.read_json()
            except (OSError, ValueError):
                continue  # a record cut short: its part does not count
            if isinstance(r, dict) and r.get("key") == self.key and r.get("file") in present:
                out.append(Part(r["file"], int(r["rows"]), r.get("info", {})))
        return sorted(out, key=lambda p: p.file)

    def files(self) -> list[Location]:
        """Data files of the sealed manifest, else of the recorded parts."""
        m = self.manifest()
        names = [p["file"] for p in m["parts"]] if m is not None else [p.file for p in self.parts()]
        return [self.folder / n for n in names]

    # ---- writing
    def write_part(self, table: pa.Table, name: str, **info: Any) -> Part:
        """Write one part whole, then record it. `name` must be unique within the folder."""
        file = f"{name}.parquet"
        # Parts are mostly float vectors and unique ids: trying dictionary encoding on them costs
        # ~10x the write itself (docs/methods.md, "Speed") and makes the files larger.
        (self.folder / file).write_parquet(table, use_dictionary=False)
        part = Part(file, table.num_rows, info)
        (self.folder / RECORDS / f"{name}.json").write_json({"key": self.key, "file": file, "rows": part.rows, "info": info})
        return part

    def seal(self, **extra: Any) -> dict:
        """Write the manifest over the recorded parts of this key and remove everything else."""
        parts = self.parts()
        manifest = {
            "key": self.key,
            **self.settings,
            **extra,
            "rows": sum(p.rows for p in parts),
            "parts": [{"file": p.file, "rows": p.rows, **({"info": p.info} if p.info else {})} for p in parts],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._remove_stale({p.file for p in parts})
        (self.folder / MANIFEST).write_json(manifest)
        return manifest

    def reset(self) -> None:
        """Drop another key's manifest and parts; keep this key's recorded parts (to resume from)."""
        m = None
        with contextlib.suppress(OSError, ValueError):
            m = (self.folder / MANIFEST).read_json()
        if m is not None and (not isinstance(m, dict) or m.get("key") != self.key):
            (self.folder / MANIFEST).delete()
        self._remove_stale({p.file for p in self.parts()})

    def _remove_stale(self, keep: set[str]) -> None:
        for f in self.folder.list(".parquet"):
            if f.name not in keep:
                f.delete()
        for rec in (self.folder / RECORDS).list(".json"):
            if f"{rec.name[: -len('.json')]}.parquet" not in keep:
                rec.delete()


def _restore(uri: str, key: str, settings: dict) -> Checkpoint:
    return Checkpoint(Location(uri), key, **settings)
