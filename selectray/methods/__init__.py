"""Selection methods, registered by name: the config's method list, the CLI's help and the
README's method table all come from `METHODS`.

Adding a method is one module with a `selectray.methods.base.Method` subclass and one
line here (or, at run time, `METHODS["name"] = MyMethod()`).
"""

from __future__ import annotations

from selectray.methods.base import Method
from selectray.methods.baselines import KCenter, Length, Random
from selectray.methods.hybrid import Hybrid
from selectray.methods.selectit import SelectIT
from selectray.methods.selectllm import SelectLLM

METHODS: dict[str, Method] = {
    "random": Random(),
    "length": Length(),
    "kcenter": KCenter(),
    "selectit": SelectIT(),
    "selectllm": SelectLLM(),
    "hybrid": Hybrid(),
}

__all__ = ["METHODS", "Method"]
