"""User-facing errors: each one is printed as a single line by the CLI (exit code 2)."""


class SelectrayError(Exception):
    """Base class for errors caused by the user's config, input or environment."""


class ConfigError(SelectrayError):
    """The run configuration is invalid (unknown key, wrong type, impossible value)."""


class InputError(SelectrayError):
    """An input file is missing, unreadable, or its columns do not fit the config."""


class MissingDependencyError(SelectrayError):
    """An optional dependency needed by the chosen step is not installed."""


def require(module: str, extra_hint: str):
    """Import an optional dependency, or fail with a message saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"'{module}' is not installed ({e}); install it with: {extra_hint}"
        ) from None
