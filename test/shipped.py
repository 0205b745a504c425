"""The models the package ships, for the tests that check them."""

from __future__ import annotations

from pathlib import Path

import pytest


def shipped_model(name: str) -> Path:
    """Path of a model the package ships (models/<name>.pt); a missing one fails the test: it is part of the
    package, not an optional extra."""
    from illexp_ros.runtime.errors import ModelLoadError
    from illexp_ros.runtime.model_io import resolve_model_path

    try:
        return resolve_model_path(name)
    except ModelLoadError as exc:
        pytest.fail(f"shipped model {name!r} missing: {exc}")
