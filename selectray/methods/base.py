"""What a selection method is: what it needs, the stages it adds, how it selects and what it reports.

A method is one module with one `Method` subclass, registered by name in
`selectray.methods.METHODS`. The pipeline reads these declarations and never asks
which method is running.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from selectray.context import RunContext
from selectray.settings import Section
from selectray.stages.selection import Selection


class Stage(Protocol):
    """A stage a method adds between k-center and select (score, pick)."""

    name: str

    def __call__(self, ctx: RunContext) -> str:
        """Run on the context, store the result in it; return a one-line summary."""


class Method:
    """Base of every method. Override what differs; the defaults need nothing and add nothing."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `--help` and the README's method table
    settings: ClassVar[type[Section] | None] = None  # the method's config section, under `name`
    needs_responses: ClassVar[bool] = False  # rows without an output are rejected (missing_output)
    needs_embeddings: ClassVar[bool] = False
    takes_seeds: ClassVar[bool] = False  # kcenter.seeds apply: they are covered, never selected
    stages: ClassVar[tuple[Stage, ...]] = ()

    def clusters(self, cfg: Any, budget: int) -> int | None:
        """k of the k-center stage, or None when the method needs no k-center clusters."""
        return None

    def select(self, ctx: RunContext, usable: np.ndarray) -> Selection:
        """The chosen positions, best first (at most ctx.budget; only where `usable`)."""
        raise NotImplementedError

    def report(self, ctx: RunContext, selection: Selection, figures: Any) -> dict[str, Any]:
        """The method's sections of report.json (and figures for report.html)."""
        return {}
