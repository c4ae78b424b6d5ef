"""The files a training run writes into its folder, and what ``--force`` may replace or remove.

A run writes ``last.safetensors``, ``log.csv``, ``config.yaml`` and, when it validates,
``best.safetensors`` (and ``tensorboard/``). As ``regkit register`` does (:mod:`regkit.io.atomic`),
each file is added to the folder's record of regkit's outputs (:data:`~regkit.io.atomic.RECORD`)
once written, and a new run — not a resume of the folder's own run —

* refuses outputs that exist, without ``--force`` (exit 2, the file named), and overwrites them
  with it;
* with ``--force`` removes the previous run's files that it does not write again (its
  ``best.safetensors``: a model of another run) only when the record lists them and they are
  unchanged: a ``best.safetensors`` the user put there stays, byte for byte.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from regkit.io.atomic import check_outputs, record_outputs, remove_previous_outputs

LAST, BEST, LOG_CSV, CONFIG_YAML = "last.safetensors", "best.safetensors", "log.csv", "config.yaml"


def prepare_run_folder(out: Path, validates: bool, force: bool) -> List[Path]:
    """Check ``out`` for a new run (``validates``: it writes ``best.safetensors``) and, with
    ``force``, remove the previous run's recorded files it does not write again, the previous
    best model among them (before this run's first validation replaces it). Returns the removed
    files; raises :class:`~regkit.errors.OutputExistsError` for an existing output without
    ``force``."""
    rewritten = [out / LAST, out / LOG_CSV, out / CONFIG_YAML]
    check_outputs(rewritten + ([out / BEST] if validates else []), force)
    return remove_previous_outputs(out, rewritten) if force and out.is_dir() else []


def record_written(out: Path, *names: str) -> None:
    """Add files this run has just written in ``out`` to its record (as they are now), so that a
    later ``--force`` may remove them; never a file the run did not write."""
    record_outputs(out, [out / name for name in names])
