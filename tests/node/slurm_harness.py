"""What every real-Slurm run here needs, for the tests and the benchmarks alike (standard library
and slurm_config only): waiting, a munged of its own, the scratch folders and paths."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import slurm_config


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def munged(root: Path) -> Iterator[None]:
    """munged with a fresh key in ``root``, on the socket slurm.conf's AuthInfo names; stopped after."""
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    Path("/run/munge").mkdir(exist_ok=True)
    subprocess.run(
        ["munged", "--force", f"--key-file={key}", f"--log-file={root / 'munged.log'}",
         f"--pid-file={root / 'munged.pid'}", f"--seed-file={root / 'munged.seed'}"],
        check=True,
    )  # fmt: skip
    try:
        yield
    finally:
        pid_file = root / "munged.pid"
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        if pid:
            os.kill(int(pid), signal.SIGTERM)


def scratch_paths(root: Path, spool_dir: str, **hooks: str) -> slurm_config.Paths:
    """Slurm's folders under ``root`` (made here), the spool at ``spool_dir``; ``hooks``: the
    health check, prolog and epilog (default ``/bin/true``)."""
    for d in ("etc", "state", "log", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    programs = {"health_check": "/bin/true", "prolog": "/bin/true", "epilog": "/bin/true", **hooks}
    return slurm_config.Paths(
        state_dir=str(root / "state"),
        spool_dir=spool_dir,
        log_dir=str(root / "log"),
        run_dir=str(root / "run"),
        **programs,
    )
