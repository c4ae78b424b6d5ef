"""Everything ``regkit register --out DIR`` writes for one registration: the result files
(:func:`regkit.io.results.write_result`) and, with ``qc``, the QC report (:func:`regkit.report.write_qc`).

The whole transform's dense field on the fixed grid (``result.field``, computed once by the
optimiser) and the warped labels are computed once and serve both: the field file, the ANTs pair
and the warped outputs, and the report's numbers and contours. The files appear together, or none
does (:func:`regkit.io.atomic.atomic_group`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from regkit.image import Image
from regkit.io.atomic import atomic_group
from regkit.io.results import write_result


def write_registration(result, out_dir: Path, moving: Optional[Image] = None, moving_labels: Optional[Image] = None,
                       labels_dtype=None, qc: bool = False, force: bool = False, default_value: float = 0.0) -> List[Path]:
    """Write ``result`` (a :class:`~regkit.optimize.RegistrationResult`) into ``out_dir``; returns the paths.

    Args:
        moving: the moving image — the grid of ``inverse_field.nii.gz`` (not written without it)
            and, with ``qc``, the report's "before" view.
        moving_labels: labels on the moving grid: ``warped_labels.nii.gz`` (``labels_dtype``: its
            numpy type) and the report's contours.
        qc: also write ``qc.png``, ``qc.html``, ``qc.json``.
        default_value: the report's value where the moving image does not reach.
    """
    out = Path(out_dir)
    warped_labels = result.apply(moving_labels) if moving_labels is not None else None
    with atomic_group(out, replace_previous=force):  # the QC files appear with the others, or nothing does
        written = write_result(result, out, moving_labels, force=force, labels_dtype=labels_dtype, moving_grid=moving,
                               warped_labels=warped_labels)
        if qc:
            from regkit.report import write_qc

            if moving is None:
                raise ValueError("the QC report needs the moving image")
            transform = result.field if result.field is not None else result.transform
            info = write_qc(result.reference, moving, transform, out, labels=warped_labels, force=force,
                            default_value=default_value)
            written += [Path(p) for p in info.get("files", [])]
    return written
