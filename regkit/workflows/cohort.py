"""Register every pair of a manifest (``regkit register --pairs``), by a trained cascade (plus
optimiser refinement) or by the optimiser alone; under torchrun the pairs are split between ranks."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

from regkit.workflows.predict_and_refine import load, register_with_model

PathLike = Union[str, Path]
log = logging.getLogger(__name__)


def rank_share(items: List, rank: Optional[int] = None, world_size: Optional[int] = None) -> List:
    """This process's share of ``items`` under torchrun (every ``world_size``-th from ``rank``)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    return items[rank::world_size]


def register_cohort(manifest: PathLike, out_dir: PathLike, model: Optional[PathLike] = None, refine: int = 0, config=None,
                    metric: Optional[str] = None, device: Optional[str] = None, force: bool = False,
                    default_value: float = 0.0) -> List[Dict[str, object]]:
    """Register every pair of a manifest (CSV/JSON as for training): with a cascade (``model``,
    plus ``refine`` optimiser iterations) or, without one, by the optimiser alone (``config``).

    Pair ``n`` (1-based, manifest order) goes to ``out_dir/pairNNN/`` with the files of
    ``regkit register --out``. Under torchrun each rank takes every WORLD_SIZE-th pair (checking
    its own outputs before any work) and writes ``out_dir/cohort_rank<R>.csv``
    (``pair,moving,fixed,seconds,status,error``).
    ``default_value``: the warped images' value where the moving image does not reach.

    A pair that cannot be registered (unreadable image, no overlap, divergence...) is logged,
    written to the CSV as ``failed`` with its one-line reason, and the other pairs go on; when
    any failed, the error raised after the CSV is written says how many and names the first.
    """
    from regkit.errors import RegkitError
    from regkit.io.atomic import write_text
    from regkit.io.images import load_label, stored_integer_dtype
    from regkit.io.results import check_outputs
    from regkit.workflows.result_folder import write_registration
    from regkit.io.manifests import read_manifest

    mine = rank_share(list(enumerate(read_manifest(Path(manifest)), start=1)))
    out = Path(out_dir)
    for n, pair in mine:
        check_outputs(out / f"pair{n:03d}", pair.moving_labels is not None, force)
    net = load(model, device) if model is not None else None
    rows: List[Dict[str, object]] = []
    failures: List[RegkitError] = []
    t_cohort = time.perf_counter()
    for count, (n, pair) in enumerate(mine, start=1):
        row: Dict[str, object] = {"pair": n, "moving": str(pair.moving), "fixed": str(pair.fixed), "seconds": "",
                                  "status": "ok", "error": ""}
        try:
            labels = load_label(pair.moving_labels) if pair.moving_labels is not None else None
            result = _register_pair(pair, net, refine, config, metric, device, default_value, model)
            write_registration(result, out / f"pair{n:03d}", moving_labels=labels, force=force,
                               labels_dtype=stored_integer_dtype(pair.moving_labels) if labels is not None else None)
            row["seconds"] = result.log["total_seconds"]
            log.info("pair %d (%d of %d): registered in %.1f s -> %s%s", n, count, len(mine), result.log["total_seconds"],
                     out / f"pair{n:03d}", _eta(t_cohort, count, len(mine)))
        except RegkitError as e:  # this pair is lost, the others are not
            named = type(e)(f"pair {n}: {e}" if e.path is not None else f"pair {n} ({pair.moving} -> {pair.fixed}): {e}")
            failures.append(named)
            row.update(status="failed", error=str(named))
            log.warning("pair %d (%d of %d) FAILED: %s%s", n, count, len(mine), named, _eta(t_cohort, count, len(mine)))
        rows.append(row)
    table = f"cohort_rank{int(os.environ.get('RANK', '0'))}.csv"
    if rows:
        write_text(out / table, _csv_text(rows), force=True)
    if failures:
        first = failures[0]
        raise type(first)(f"{len(failures)} of {len(rows)} pairs failed (the others are in {out}; see {table}); first: {first}")
    return rows


def _eta(start: float, done: int, total: int) -> str:
    """``"; 3 left, about 2 min 10 s"`` from the mean time per pair so far (empty at the end)."""
    left = total - done
    if left <= 0 or done <= 0:
        return ""
    seconds = (time.perf_counter() - start) / done * left
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"; {left} left, about {f'{minutes} min ' if minutes else ''}{rest} s"


def _register_pair(pair, net, refine: int, config, metric, device, default_value: float, model):
    """One manifest pair: read, check and register (by the cascade when ``net`` is given)."""
    from regkit.checks import check_has_contrast
    from regkit.io.images import load_image
    from regkit.optimize import register

    moving, fixed = load_image(pair.moving), load_image(pair.fixed)
    check_has_contrast(moving, pair.moving)
    check_has_contrast(fixed, pair.fixed)
    if net is not None:
        return register_with_model(moving, fixed, net, refine, config, metric, device, default_value, str(model))
    return register(moving, fixed, config=config, device=device, metric=metric, default_value=default_value)


def _csv_text(rows: List[Dict[str, object]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
