"""The `selectray` command. Usage, config and input errors: one line on stderr, exit code 2.

Each subcommand is a module of `selectray.commands`, listed in `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from selectray.errors import SelectrayError

COMMANDS = ("plan", "run", "report", "eval", "export", "rescore", "serve", "generate")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="selectray",
        description="Select the most valuable instruction-tuning rows out of a large pool, on Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"selectray.commands.{name}")
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=mod.epilog() if hasattr(mod, "epilog") else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def _user_error(e: BaseException) -> SelectrayError | None:
    """The SelectrayError behind an exception, also when Ray wrapped it in a task error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, SelectrayError):
            return e
        e = getattr(e, "cause", None) or e.__cause__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("selectray: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001
        user = _user_error(e)
        if user is None:
            raise
        msg = " ".join(str(user).split())
        sys.stderr.write(f"selectray: error: {msg}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
