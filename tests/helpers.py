"""Small helpers the tests share: where a version's bytes are, and tampering."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WEIGHT_FILES = ("model.skops", "model.pkl")


def stored_dir(client: Any, name: str, version: str | int) -> Path:
    """The local directory that holds a version's stored bytes."""
    from mlflow_integrity.stores import local_path

    uri = client.get_model_version_download_uri(name, str(version))
    path = local_path(uri)
    assert path is not None, f"{uri} is not a local store"
    return Path(path)


def weights_file(directory: Path) -> Path:
    """The weights file MLflow wrote (``model.skops`` or ``model.pkl``)."""
    for candidate in WEIGHT_FILES:
        if (directory / candidate).is_file():
            return directory / candidate
    raise AssertionError(f"no weights file in {sorted(os.listdir(directory))}")


def flip_byte(path: Path, offset: int = 64) -> None:
    """Change one byte of a file in place, keeping its size."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))
