"""Where the ``aragora`` server binary is, for the SDK features that run it locally."""

from __future__ import annotations

import os
import shutil


class BinaryNotFound(RuntimeError):
    """Neither ``ARAGORA_BIN`` nor ``aragora`` on ``PATH`` names an executable."""


def binary() -> str:
    """Path of the ``aragora`` server binary: ``ARAGORA_BIN``, else ``aragora`` on ``PATH``."""
    path = os.environ.get("ARAGORA_BIN") or shutil.which("aragora")
    if not path or not os.access(path, os.X_OK):
        raise BinaryNotFound(
            "the aragora server binary was not found: set ARAGORA_BIN or put `aragora` on PATH "
            "(cargo build --release -p aragora builds target/release/aragora)"
        )
    return path
