"""Write a registration into a folder (what ``regkit register --out DIR`` produces).

Files (all atomic; none overwritten without ``force``):

* ``warped.nii.gz`` — moving resampled on the fixed grid (linear);
* ``warped_labels.nii.gz`` — moving labels, nearest neighbour (when labels are given);
* ``field.nii.gz`` — dense fixed→moving displacement of the WHOLE transform (affine included) on
  the fixed grid, ITK/ANTs convention (LPS mm, 5-D vector intent);
* ``inverse_field.nii.gz`` — the WHOLE inverse, moving→fixed, on the moving grid (with the
  moving grid given): ``regkit apply inverse_field.nii.gz fixed_labels.nii.gz -r moving.nii.gz``;
* ``transform.regkit.safetensors`` — the exact transform (regkit's own format);
* ANTs' names for the parts, whose number says their place in the chain (so a part is never
  taken for the whole): ``0GenericAffine.mat`` — the affine part (ITK); ``1Warp.nii.gz`` — the
  deformable part alone on the fixed grid, so ``regkit apply 1Warp.nii.gz 0GenericAffine.mat`` =
  the whole map, ANTs' ``-t 1Warp -t 0GenericAffine`` order; ``1InverseWarp.nii.gz`` — its
  inverse on the fixed grid, so ``"[0GenericAffine.mat,1]" 1InverseWarp.nii.gz`` = the whole
  inverse, as antsApplyTransforms takes ANTs' own result;
* ``log.json`` / ``log.txt`` — settings, per-level loss and iterations, seconds.
"""
from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from regkit.io.atomic import atomic_group, check_folder
from regkit.io.atomic import check_outputs as check_all
from regkit.io.atomic import write_text

WARPED = "warped.nii.gz"
WARPED_LABELS = "warped_labels.nii.gz"
FIELD = "field.nii.gz"
NATIVE = "transform.regkit.safetensors"
INVERSE_FIELD = "inverse_field.nii.gz"
AFFINE = "0GenericAffine.mat"
WARP = "1Warp.nii.gz"
INVERSE_WARP = "1InverseWarp.nii.gz"
LOG_JSON = "log.json"
LOG_TXT = "log.txt"


def output_names(labels: bool, affine: bool = True, deformable: bool = True) -> List[str]:
    names = [WARPED] + ([WARPED_LABELS] if labels else []) + [FIELD, INVERSE_FIELD, NATIVE]
    names += ([AFFINE] if affine else []) + ([WARP, INVERSE_WARP] if deformable else [])
    return names + [LOG_JSON, LOG_TXT]


QC_NAMES = ("qc.png", "qc.html", "qc.json")  # regkit.report.FILES, named here so checking them imports nothing


def check_outputs(out_dir: Path, labels: bool, force: bool, qc: bool = False) -> None:
    """Refuse BEFORE registering: OutputExistsError (exit 2) when an output (with ``qc``, the QC
    report's too) exists and not ``force``; InputError when ``out_dir`` is a file or cannot be written."""
    out = check_folder(out_dir)
    check_all([out / name for name in output_names(labels) + (list(QC_NAMES) if qc else [])], force)


def write_result(result, out_dir: Path, moving_labels=None, force: bool = False, labels_dtype=None,
                 moving_grid=None, warped_labels=None) -> List[Path]:
    """Write ``result`` (a :class:`RegistrationResult`) into ``out_dir``; returns the paths.
    ``labels_dtype``: the warped labels' numpy type (the labels file's own, so uint8 stays uint8;
    default int16, or int32 when the values need it). ``moving_grid``: the moving image (or its
    grid), where the whole inverse ``inverse_field.nii.gz`` is written (not written without it).
    ``warped_labels``: ``result.apply(moving_labels)`` when the caller has it already (the QC
    report uses it too).

    Every field is written on ``result.grid`` (the fixed grid); the whole transform's dense field
    there is ``result.field`` when the optimiser computed it (written as it is, never recomputed).

    Everything is computed first, then the files are written two at a time: gzip compression of
    the two 3-vector fields is most of the writing and runs outside the GIL (≈ 1.2 → 0.7 s for a
    2 mm brain on 2 cores). The files appear together at the end (:func:`atomic_group`); after an
    error or Ctrl-C the writes under way finish, the others are not started, every temporary file
    is removed, no output is touched, and the error is raised.
    """
    out = Path(out_dir)
    # all files or none (a Ctrl-C while writing leaves no partial result); with force, the files
    # an EARLIER run recorded there and this one does not write (its warped_labels.nii.gz, qc.png,
    # warp.nii.gz...) are removed — only those regkit wrote, never an input or the user's own
    with atomic_group(out, replace_previous=force):
        out.mkdir(parents=True, exist_ok=True)
        written = _run_writes(_write_jobs(result, out, moving_labels, labels_dtype, moving_grid, warped_labels), force)
    return written


def _write_jobs(result, out: Path, moving_labels, labels_dtype=None, moving_grid=None,
                warped_labels=None) -> List[Tuple[Callable[..., Path], tuple]]:
    """``(writer, args)`` for every output of ``write_result`` (the data computed here, once)."""
    import torch

    from regkit.io.images import save_image
    from regkit.io.transform_files import write_transform
    from regkit.transforms import Compose, VelocityField

    jobs: List[Tuple[Callable[..., Path], tuple]] = [(save_image, (result.warped, out / WARPED))]
    if moving_labels is not None:
        labels = warped_labels if warped_labels is not None else result.apply(moving_labels)
        jobs.append((partial(save_image, dtype=labels_dtype), (labels, out / WARPED_LABELS)))
    with torch.no_grad():
        if result.field is not None:  # already on the fixed grid: written as it is
            jobs.append((write_transform, (result.field, out / FIELD)))
        else:
            jobs.append((partial(write_transform, reference=result.grid), (result.transform, out / FIELD)))
        jobs.append((write_transform, (result.transform, out / NATIVE)))
        chain = list(result.transform.transforms) if isinstance(result.transform, Compose) else [result.transform]
        # the whole inverse (moving -> fixed), the parts' inverses in reverse order: an SVF's is
        # exp(-v), the affine's exact. (`regkit invert` refines exp(-v) against exp(v) and reports the
        # round trip; that refinement took 35 s of a 62 s 1 mm registration process, exp(-v) ~1 s.)
        inverse = result.transform.inverse()
        # exp(-v) integrated once, here, for both files that hold it (inverse_field, 1InverseWarp)
        inverse_chain = [t.exp() if isinstance(t, VelocityField) else t
                         for t in (inverse.transforms if isinstance(inverse, Compose) else [inverse])]
        inverse = inverse_chain[0] if len(inverse_chain) == 1 else Compose(*inverse_chain)
        if result.affine is not None and chain and chain[-1] is result.affine:
            jobs.append((write_transform, (result.affine, out / AFFINE)))
            if len(chain) > 1:
                part = _deformable_part(result, chain)  # float32
                jobs.append((write_transform, (part, out / WARP)))
                part_inverse = inverse_chain[1] if len(inverse_chain) == 2 else Compose(*inverse_chain[1:])
                jobs.append((partial(write_transform, reference=result.grid), (part_inverse, out / INVERSE_WARP)))
        if moving_grid is not None:  # the longest job (a dense inverse on another grid): started first
            jobs.insert(0, (partial(write_transform, reference=moving_grid), (inverse, out / INVERSE_FIELD)))
    jobs.append((write_text, (out / LOG_JSON, json.dumps(result.log, indent=1, default=str))))
    jobs.append((write_text, (out / LOG_TXT, log_text(result.log))))
    return jobs


def _deformable_part(result, chain):
    """The deformable part (``chain`` without its last transform, the affine ``A``) as a dense
    field on the fixed grid. From the whole field ``f`` already computed when there is one:
    ``A⁻¹(x + f(x)) - x`` (one 3×3 product per voxel instead of evaluating the fields again)."""
    import torch

    from regkit import space
    from regkit.transforms import Compose, DisplacementField, to_displacement_field

    grid, field = result.grid, result.field
    if field is None or tuple(field.shape) != tuple(grid.shape) or not torch.allclose(field.affine.double(), grid.affine.double()):
        return to_displacement_field(Compose(*chain[:-1]), grid.affine, grid.shape)
    inverse_affine = torch.linalg.inv(result.affine.homogeneous().double())
    x = space.world_grid(grid.affine, grid.shape, dtype=torch.float32)
    mapped = space.apply_matrix(inverse_affine, x + field.displacement[0].movedim(0, -1))
    return DisplacementField(mapped.sub_(x).movedim(-1, 0).contiguous(), grid.affine)


def _run_writes(jobs: List[Tuple[Callable[..., Path], tuple]], force: bool, workers: int = 2) -> List[Path]:
    """Run ``writer(*args, force=force)`` for every job on ``workers`` threads; paths in job order."""
    import torch

    def run(writer, args):
        with torch.no_grad():  # grad mode is per thread
            return writer(*args, force=force)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="regkit-write")
    try:  # each job in a copy of this context: its files join the caller's atomic_group
        futures = [pool.submit(contextvars.copy_context().run, run, writer, args) for writer, args in jobs]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def log_text(log: Dict) -> str:
    """A human-readable log: settings, one line per level, total time."""
    lines = ["regkit register", f"device: {log.get('device')}  threads: {log.get('threads')}  seed: {log.get('seed')}",
             f"fixed grid {log.get('fixed_shape')}  moving grid {log.get('moving_shape')}  working box {log.get('working_box')}",
             "settings: " + json.dumps(log.get("config", {}), default=str)]
    if "length_scale" in log:
        lines.append(f"lengths scaled by {log['length_scale']:g}: the fixed foreground is small for the preset's mm "
                     "(spacings, control grids, steps and margin scaled alike)")
    if "model" in log:
        lines.append(f"model: {log['model']} (prediction {log.get('predict_seconds')} s, then {log.get('refine', 0)} refinement iterations)")
    if "initial_transform" in log:
        lines.append(f"start: {log['initial_transform']} (given; no affine stage)")
    lines.append("")
    for lv in log.get("levels", []):
        loss = lv.get("loss") or [float("nan")]
        extra = f" control {lv['control_grid']} @{lv['control_spacing_mm']:g}mm" if "control_grid" in lv else ""
        lines.append(f"{lv['stage']:>10} level {lv['level']} @{lv['spacing_mm']:g}mm grid {lv['grid']}{extra}: "
                     f"{lv['iterations']} it{' (plateau)' if lv.get('stopped_early') else ''}, "
                     f"loss {loss[0]:.5f} -> {loss[-1]:.5f}, {lv['seconds']:.2f} s")
    lines.append(f"registration {log.get('register_seconds')} s, with final resampling {log.get('total_seconds')} s")
    return "\n".join(lines) + "\n"


def summary_line(log: Dict, out_dir: Path, n_files: int, wall_seconds: Optional[float] = None,
                 write_seconds: Optional[float] = None, moving=None, fixed=None) -> str:
    """One line: what was registered onto what (when ``moving``/``fixed`` are given), the time by
    stage, the final loss and where the files are."""
    stages: Dict[str, float] = {}
    for lv in log.get("levels", []):
        stages[lv["stage"]] = stages.get(lv["stage"], 0.0) + lv["seconds"]
    if "predict_seconds" in log:  # a trained cascade's prediction (--model) came first
        stages = {"prediction": float(log["predict_seconds"]), **stages}
    parts = ", ".join([f"{k} {v:.1f} s" for k, v in stages.items()] +
                      ([f"writing {write_seconds:.1f} s"] if write_seconds is not None else []))
    total = f"{wall_seconds:.1f} s" if wall_seconds is not None else f"{log.get('total_seconds')} s"
    loss = log.get("final_loss")
    loss_s = f"; final loss {loss:.4f}" if isinstance(loss, float) else ""
    what = f"{moving} (moving) -> {fixed} (fixed): " if moving is not None and fixed is not None else ""
    return f"regkit register: {what}done in {total} ({parts}){loss_s}; {n_files} files in {out_dir}"
