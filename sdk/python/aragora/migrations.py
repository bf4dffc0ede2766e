"""``python -m aragora.migrations``: the guide's migration command, for the Rust server.

The migrations ship inside the ``aragora`` server binary; this module runs ``aragora migrate``
with the arguments it was given (``--status``, ``--data-dir``, ``--database-url``) and exits with
its status. The binary is ``ARAGORA_BIN`` if set, else ``aragora`` on ``PATH``. Like the binary,
it applies migrations to ``DATABASE_URL`` when set, else to SQLite in ``--data-dir`` /
``ARAGORA_DATA_DIR`` (default ``./aragora-data``).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Optional, Sequence

from aragora._binary import BinaryNotFound, binary

__all__ = ["BinaryNotFound", "binary", "run", "main"]


def run(args: Optional[Sequence[str]] = None) -> int:
    """Runs ``aragora migrate *args`` and returns its exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    return subprocess.call([binary(), "migrate", *argv])


def main() -> None:
    try:
        sys.exit(run())
    except BinaryNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
