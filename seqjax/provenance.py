"""What produced a run: code revision, package versions, devices, time.

Written to `W/run_info.json` so a number in a table can be traced back to the
exact code and hardware that produced it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

PACKAGES = (
    "seqjax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "tensorflow-datasets",
    "ml-collections",
)


def git_revision(path: str | None = None) -> dict:
    """{'revision': sha or None, 'dirty': bool or None} of the repo holding `path`."""
    path = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"revision": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"revision": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
    }


def collect() -> dict:
    """Everything above plus the command line and Python/host facts."""
    return {
        "argv": sys.argv,
        "git": git_revision(),
        "packages": package_versions(),
        "devices": device_info(),
        "python": platform.python_version(),
        "host": platform.node(),
    }
