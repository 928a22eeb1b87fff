"""Where a run's files live: a local folder, a shared filesystem or an object store.

Every file of a run goes through a `Location` (pyarrow's filesystem layer), so the
output directory may be a path or a URI (`s3://bucket/run`, `gs://...`, anything
`pyarrow.fs.FileSystem.from_uri` resolves; credentials and endpoint come from the
standard environment, e.g. `AWS_ENDPOINT_URL` and the AWS credential chain).

No operation relies on renaming a folder (object stores have none). A file is
written whole before anything refers to it: on a local disk through a temporary
file replaced into place, on an object store by a single upload that becomes
visible only once complete.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from selectray.errors import InputError


def is_uri(text: str) -> bool:
    """True for `scheme://...` strings (object stores, `file://`)."""
    return "://" in str(text)


class Location:
    """A file or folder on some filesystem; picklable (it travels to Ray workers as its URI)."""

    def __init__(self, uri: str, _fs: pafs.FileSystem | None = None, _path: str | None = None):
        uri = str(uri)
        if _fs is not None:  # a child of a resolved Location: same filesystem, no new client
            self.fs, self.path, self.uri = _fs, _path, uri
            return
        if is_uri(uri):
            try:
                self.fs, path = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
                raise InputError(f"cannot open '{uri}': {str(e).splitlines()[0]}") from None
            scheme = uri.split("://", 1)[0]
            self.path = path.rstrip("/")
            self.uri = self.path if scheme == "file" else f"{scheme}://{self.path}"
        else:
            self.fs = pafs.LocalFileSystem()
            self.path = os.path.abspath(os.path.expanduser(uri))
            self.uri = self.path

    def __reduce__(self):
        return Location, (self.uri,)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> Location:
        return Location(f"{self.uri.rstrip('/')}/{name}", self.fs, f"{self.path.rstrip('/')}/{name}")

    # ---- inspection
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def list(self, suffix: str = "") -> list[Location]:
        """Files directly in this folder whose name ends with `suffix`, sorted by name."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        return [self / n for n in names]

    # ---- reading
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def read_parquet(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path, columns=columns, filesystem=self.fs)

    def parquet_rows(self) -> int:
        """Row count from the file's footer only."""
        with self.fs.open_input_file(self.path) as f:
            return pq.ParquetFile(f).metadata.num_rows

    # ---- writing
    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def _write(self, fill) -> None:
        """Write the file whole with `fill(stream)`: readers see the old content or the new, never a part."""
        if self.is_local:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as f:
                    fill(f)
                os.replace(tmp, self.path)  # a file, never a folder
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        with self.fs.open_output_stream(self.path) as f:  # an upload: visible once complete
            fill(f)

    def write_bytes(self, data: bytes) -> None:
        self._write(lambda f: f.write(data))

    def write_json(self, obj: Any) -> None:
        self.write_bytes(json.dumps(obj, indent=2, default=str).encode())

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_parquet(self, table: pa.Table, **kwargs: Any) -> None:
        self._write(lambda f: pq.write_table(table, f, **kwargs))

    def delete(self) -> None:
        """Remove this file or folder (and its contents); a missing one is fine."""
        info = self._info()
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)


def prepare_output(uri: str) -> Location:
    """The run's output folder, created and checked writable; a one-line error when it cannot be used."""
    from selectray.errors import ConfigError

    try:
        loc = Location(uri)
    except InputError as e:
        raise ConfigError(f"output: {e}") from None
    try:
        if loc.is_file():
            raise ConfigError(f"output '{uri}' is a file; name a folder (or an object-store prefix)")
        loc.mkdir()
        probe = loc / f".selectray-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.delete()
    except ConfigError:
        raise
    except (OSError, pa.ArrowException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"output '{uri}' cannot be written: {first}") from None
    return loc
