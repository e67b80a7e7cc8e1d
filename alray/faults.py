"""Failpoints for fault-injection tests: a named point fails once when its trigger file exists.

Off unless ``ALRAY_FAILPOINTS_DIR`` is set; then a point named ``NAME`` fails the first time it
is reached after a file ``NAME`` appears in that folder (the file is removed, atomically, so
exactly one task attempt fails, whichever process it runs in).
"""

from __future__ import annotations

import os

ENV = "ALRAY_FAILPOINTS_DIR"


def fail_once(name: str, *, kill: bool = False) -> None:
    """Fail here once if armed: raise RuntimeError, or with ``kill`` end the whole process."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    try:
        os.remove(os.path.join(folder, name))
    except FileNotFoundError:
        return
    if kill:
        os._exit(137)  # as if the worker were killed: no cleanup, no exception to catch
    raise RuntimeError(f"failpoint {name}: injected failure")


def is_armed(name: str) -> bool:
    """Whether failpoint ``name`` would fail if reached now (for code that must prepare the failure)."""
    folder = os.environ.get(ENV)
    return folder is not None and os.path.exists(os.path.join(folder, name))


def arm(folder: str, name: str) -> None:
    """Arm failpoint ``name`` in ``folder`` (what a test does before the run)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w"):
        pass
