"""Optional packages that carry published weights (the `weights` extra of pyproject.toml).

A reward model that needs one imports it through `require`, which turns an ImportError into a
`MissingPackageError`: one line naming the model, the missing module and the install command.
`python -m bench.run` and `python -m rewards.serve` print that line and exit 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from audiobase.weights import MissingPackageError

__all__ = ["MissingPackageError", "require"]


def require(module: str, model: str, install: str) -> ModuleType:
    """Import `module` for `model`, or raise `MissingPackageError` with `install` (a pip line)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackageError(
            f"model={model} needs the package {module!r} ({e}); install it with: {install}"
        ) from e
