"""A finished run's rows as training data: the prompt template, the run's selection and pool,
and the selection written in the formats fine-tuning tools read (TRL, Axolotl, LLaMA-Factory).

`selectray eval` trains on exactly what `selectray export` writes: the user turn is
`user_turn(instruction, input)` and the training prompt wraps it in `PROMPT_TEMPLATE`.
No Ray here: a finished run's files are plain Parquet/JSONL read with pyarrow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectray.columns import ID, INPUT_ROW, RANK, REJECT
from selectray.errors import InputError, SelectrayError
from selectray.settings import ColumnsConfig
from selectray.stages.validate import content_hash, parse_jsonl
from selectray.storage import Location, is_uri

# The user turn: the instruction, then the input (when there is one) after a blank line.
USER_TEMPLATE = "{instruction}\n\n{input}"
# The training prompt around the user turn; the response follows it, then the EOS token.
PROMPT_TEMPLATE = "### Instruction:\n{user}\n\n### Response:\n"

FORMATS = ("alpaca", "sharegpt", "messages")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def user_turn(instruction: str, input: str | None) -> str:
    """The user's message: the instruction, plus the input after a blank line when it is not blank."""
    if input is None or not input.strip():
        return instruction
    return USER_TEMPLATE.format(instruction=instruction, input=input)


def prompt_text(instruction: str, input: str | None) -> str:
    """The training prompt of a row (everything before the response)."""
    return PROMPT_TEMPLATE.format(user=user_turn(instruction, input))


def content_key(instruction: str | None, input: str | None, output: str | None) -> str:
    """A row's text identity with whitespace runs collapsed (held-out rows are compared by it)."""
    return content_hash(*(" ".join((s or "").split()) for s in (instruction, input, output)))


@dataclass
class TextRows:
    """Rows reduced to what training needs: ids and the three text fields (None where absent)."""

    ids: list
    instruction: list
    input: list
    output: list

    def __len__(self) -> int:
        return len(self.instruction)

    def take(self, idx) -> TextRows:
        return TextRows(*([col[i] for i in idx] for col in (self.ids, self.instruction, self.input, self.output)))

    def trainable(self) -> np.ndarray:
        """Positions of rows with a non-blank instruction and a non-blank response."""
        return np.array([i for i, (a, c) in enumerate(zip(self.instruction, self.output))
                         if _filled(a) and _filled(c)], dtype=np.int64)


def _filled(s) -> bool:
    return isinstance(s, str) and bool(s.strip())


def _text(table: pa.Table, name: str | None) -> list:
    if not name or name not in table.column_names:
        return [None] * table.num_rows
    return [v if isinstance(v, str) else None for v in table[name].to_pylist()]


def text_rows(table: pa.Table, cols: ColumnsConfig) -> TextRows:
    """The text fields of a table under a column mapping; ids from the id column when it has one."""
    id_col = cols.id if cols.id not in (None, "auto") else (ID if cols.id == "auto" and ID in table.column_names else None)
    ids = [None if v is None else str(v) for v in table[id_col].to_pylist()] if id_col in table.column_names else [None] * table.num_rows
    return TextRows(ids, _text(table, cols.instruction), _text(table, cols.input), _text(table, cols.output))


def read_rows_file(path: str) -> pa.Table:
    """A Parquet or JSONL file (by suffix) as a table; unparsable JSONL lines carry `_reject`."""
    kind = _SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise InputError(f"cannot tell the format of {path}; name it .parquet or .jsonl")
    loc = Location(path)
    if not loc.is_file():
        raise InputError(f"file not found: {path}")
    try:
        if kind == "parquet":
            return loc.read_parquet()
        return parse_jsonl(loc.read_bytes(), [])
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


class FinishedRun:
    """The output folder of a finished `selectray run`: its report, column mapping, selection and pool."""

    def __init__(self, out: str):
        self.out = Location(out)
        self.name = out
        for f in ("report.json", "selected.parquet"):
            if not (self.out / f).exists():
                raise SelectrayError(f"{out} is not a finished selectray run (no {f})")
        try:
            self.report = (self.out / "report.json").read_json()
        except ValueError:
            raise SelectrayError(f"{out}/report.json is not valid JSON") from None
        # report.json may record the run's column mapping; the defaults otherwise.
        self.columns = ColumnsConfig(**(self.report.get("columns") or {}))

    def selected(self) -> pa.Table:
        """selected.parquet (a file or a folder of shards), sorted by rank."""
        t = (self.out / "selected.parquet").read_parquet()
        return t.sort_by(RANK) if RANK in t.column_names else t

    def pool(self, override: list[str] | None = None) -> tuple[TextRows, np.ndarray]:
        """Every input row of the run (rejected ones too) and a mask of the usable ones.

        Rows are numbered as the read stage numbers them (stages/read.py: Parquet files
        first, then JSONL, each in path order; blank JSONL lines are not rows), so a
        row is usable when its number is not an `input_row` of rejected.parquet.
        """
        paths = override or self.report.get("input") or []
        if isinstance(paths, str):
            paths = [paths]
        files = _expand(paths)
        kinds = [_SUFFIXES.get(Path(f).suffix.lower()) for f in files]
        ordered = [f for f, k in zip(files, kinds) if k == "parquet"] + [f for f, k in zip(files, kinds) if k == "jsonl"]
        tables = [read_rows_file(f) for f in ordered]
        rows = TextRows([], [], [], [])
        for t in tables:
            part = text_rows(t, self.columns)
            for mine, theirs in zip((rows.ids, rows.instruction, rows.input, rows.output),
                                    (part.ids, part.instruction, part.input, part.output)):
                mine.extend(theirs)
        if self.report.get("input_rows") not in (None, len(rows)):
            raise SelectrayError(f"the input of {self.name} ({', '.join(paths)}) changed since the run: "
                                 f"{len(rows)} rows now, the run read {self.report['input_rows']}")
        usable = np.ones(len(rows), dtype=bool)
        rej = self.out / "rejected.parquet"
        if rej.exists():
            at = rej.read_parquet(columns=[INPUT_ROW])[INPUT_ROW].to_numpy(zero_copy_only=False)
            usable[at[at < len(rows)]] = False
        return rows, usable


def _expand(paths: list[str]) -> list[str]:
    files = []
    for raw in paths:
        if is_uri(raw):
            files.append(raw)
            continue
        p = Path(raw)
        if not p.exists():
            raise InputError(f"the run's input {raw} is not found (relative paths are read from the "
                             "current directory); give the pool with --pool")
        files += [str(q) for q in sorted(p.rglob("*")) if q.suffix in _SUFFIXES and q.is_file()] if p.is_dir() else [str(p)]
    return files


# ---------------------------------------------------------------- export formats


def to_records(selected: pa.Table, cols: ColumnsConfig, fmt: str) -> tuple[list[dict], int]:
    """The selected rows in one format, with `id` and `rank`; rows without a response are skipped and counted."""
    if fmt not in FORMATS:
        raise SelectrayError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    rows = text_rows(selected, cols)
    ids = selected[ID].to_pylist() if ID in selected.column_names else rows.ids
    ranks = selected[RANK].to_pylist() if RANK in selected.column_names else list(range(1, len(rows) + 1))
    out = []
    for i in rows.trainable():
        instr, inp, resp = rows.instruction[i], rows.input[i] or "", rows.output[i]
        if fmt == "alpaca":
            rec = {"instruction": instr, "input": inp, "output": resp}
        elif fmt == "sharegpt":
            rec = {"conversations": [{"from": "human", "value": user_turn(instr, inp)}, {"from": "gpt", "value": resp}]}
        else:
            rec = {"messages": [{"role": "user", "content": user_turn(instr, inp)}, {"role": "assistant", "content": resp}]}
        out.append({**rec, "id": ids[i], "rank": ranks[i]})
    return out, len(rows) - len(out)


def export_selection(out: str, fmt: str, to: str | None = None) -> tuple[str, int, int]:
    """Write a finished run's selection in `fmt` to `to` (JSONL or Parquet by suffix; default
    OUT/selected.<fmt>.jsonl). Returns (path, rows written, rows skipped for lack of a response)."""
    if fmt not in FORMATS:
        raise SelectrayError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    run = FinishedRun(out)
    target = Location(to) if to else run.out / f"selected.{fmt}.jsonl"
    kind = _SUFFIXES.get(Path(target.path).suffix.lower())
    if kind is None:
        raise SelectrayError(f"--to {to}: name the file .jsonl or .parquet")
    records, skipped = to_records(run.selected(), run.columns, fmt)
    if kind == "parquet":
        target.write_parquet(pa.Table.from_pylist(records))
    else:
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return target.uri, len(records), skipped


def drop_rejected_lines(table: pa.Table) -> tuple[pa.Table, int]:
    """A table without its unparsable JSONL lines (those carrying `_reject`), and how many there were."""
    if REJECT not in table.column_names:
        return table, 0
    bad = pc.fill_null(pc.is_valid(table[REJECT]), False)
    n = int(pc.sum(bad).as_py() or 0)
    return table.filter(pc.invert(bad)).drop_columns([REJECT]), n

