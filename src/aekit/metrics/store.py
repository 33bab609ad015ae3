"""``RUN/metrics.json``: the evaluation of a run, kept beside it, and whether it is still the current one.

A metrics file records a fingerprint of the weights it measured (the sha256 of ``model.safetensors``): it is
current while the run folder holds those weights, whatever the files' times say (a copy, a checkout or a
restore changes times, not contents). An older file without the fingerprint, of another format, or damaged
is not current, and is measured again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import AekitError
from ..files import atomic_write_json, read_json
from ..run import MODEL

METRICS_FILE = "metrics.json"
METRICS_FORMAT = "aekit-metrics"
METRICS_VERSION = 1


def metrics_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / METRICS_FILE


def weights_fingerprint(run_dir: str | os.PathLike) -> str | None:
    """The sha256 of the run's ``model.safetensors`` (None if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(Path(run_dir) / MODEL, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``metrics.json`` if it measured the weights now in the folder, else None."""
    path = metrics_path(run_dir)
    if not path.is_file():
        return None
    try:
        metrics = read_json(path, "metrics file")
    except AekitError:
        return None
    if not isinstance(metrics, dict) or (metrics.get("format"), metrics.get("format_version")) != (
        METRICS_FORMAT, METRICS_VERSION
    ):
        return None
    measured = metrics.get("run", {}).get("weights_sha256") if isinstance(metrics.get("run"), dict) else None
    if measured is None or measured != weights_fingerprint(run_dir):
        return None
    return metrics


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """Write the metrics to ``path`` (a run's ``metrics.json``) atomically, stamped with the ``fingerprint`` of the
    weights they measured (taken before they were loaded: :func:`weights_fingerprint`); returns what it wrote."""
    stamped = {**metrics, "run": {**metrics.get("run", {}), "weights_sha256": fingerprint}}
    atomic_write_json(path, stamped)
    return stamped
