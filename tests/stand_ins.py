"""Stand-ins for the commands node scripts call: small bash scripts in a folder the test puts
first on the PATH."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def script(path: Path, body: str) -> Path:
    """An executable bash script at ``path`` running ``body``."""
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return path


def stand_ins(folder: Path, bodies: Mapping[str, str]) -> Path:
    """A script per command name in ``folder`` (made if missing); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():
        script(folder / name, body)
    return folder
