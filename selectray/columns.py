"""Column names shared by every stage, defined once.

Input columns are the user's (mapped in `settings.ColumnsConfig`); these are the ones
selectray adds. Names starting with "_" are internal and never reach `selected.parquet`.
"""

ID = "id"  # the row's stable id: the user's id column, or the content hash
POS = "pos"  # dense position 0..N-1 among the usable rows: the row identity of every later stage
HASH = "_hash"  # content hash of the text fields: the key of every cache
REJECT = "_reject"  # null, or why the row cannot be used
ROW = "_row"  # 0-based position among all input rows (rejected ones included)
RAW_LINE = "_raw_line"  # an unparsable JSONL line, kept for rejected.parquet

EMBEDDING = "embedding"  # fixed-size list of float32 (or float16)
CLUSTER = "cluster_id"  # index of the nearest k-center center (or the k-means region)
DISTANCE = "distance"  # distance to that center
GROUP = "group_id"  # the SelectLLM candidate group a row was shown in
RANK = "rank"  # 1 = best

REASON = "reason"  # rejected.parquet: the reject reason
INPUT_ROW = "input_row"  # rejected.parquet: the row's 0-based number in the input


def is_internal(name: str) -> bool:
    """Columns that stay inside a run (never written to selected.parquet)."""
    return name.startswith("_") or name == POS
