"""`regkit register`: optimise a transform for one pair (centre of mass → affine → SVF)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Register MOVING to FIXED by optimisation (no training needed) and write the results into --out DIR.

Pipeline on one pyramid: centre-of-mass start, 12-parameter affine (coarse to fine), then a
diffeomorphic stationary velocity field at increasing resolution; the moving image is sampled once
per step through the whole chain. The transform maps fixed points to moving points: x -> A(x + u(x)).

DIR receives: warped.nii.gz; warped_labels.nii.gz (with --moving-labels, nearest neighbour);
field.nii.gz (dense fixed->moving displacement of the whole transform on the fixed grid, ITK/ANTs
convention: LPS mm, vector image); transform.regkit.safetensors (exact); affine.mat + warp.nii.gz
(ITK affine and the deformable part, ANTs order: `regkit apply warp.nii.gz affine.mat ...`);
log.txt and log.json. Existing files are never overwritten without --force.

--config picks a preset (fast, default, accurate, ct, mri; see configs/) or a YAML file with the
same keys; unknown keys are refused. Keys a YAML file leaves out take the library's built-in
values (RegistrationConfig), not the default preset's: start from a copy of configs/default.yaml.
--metric overrides the preset's similarity: lncc (same contrast, default), mse, mi (different
contrasts: T1/T2, CT/MRI) or mind.

Examples:

  regkit register moving.nii.gz fixed.nii.gz --out result/

  regkit register moving.nii.gz fixed.nii.gz --out result/ --moving-labels moving_labels.nii.gz --qc

  regkit register t2.nii.gz t1.nii.gz --out result/ --metric mi --config accurate

  regkit register ct_a.nii.gz ct_b.nii.gz --out result/ --config ct --default-value -1000 --device cuda --force

  regkit register moving.nii.gz fixed.nii.gz --out result/ --config my_settings.yaml --seed 1

  regkit register t2.nii.gz t1.nii.gz --out result/ --model brain

  regkit register moving.nii.gz fixed.nii.gz --out result/ --model runs/brain2mm/best.safetensors --refine 20

  torchrun --nproc_per_node=2 -m regkit.cli register --pairs pairs.csv --model best.safetensors --out cohort/

--model NAME|CKPT starts from a trained cascade's prediction: a model shipped with regkit (`brain`,
brain MRI of any contrast; `regkit models` lists them) or a checkpoint of `regkit train`; --refine N then runs N
optimiser iterations over the preset's deformable levels (40 = the default preset's 30 @4 mm +
10 @2 mm), starting from the prediction (0: the prediction is the result). --pairs
MANIFEST (CSV/JSON: moving,fixed[,moving_labels,fixed_labels]) registers a cohort into
DIR/pairNNN/ and lists them in DIR/cohort_rank0.csv; a pair that fails is listed with its reason
and the others go on (the exit code says that some failed); under torchrun each process takes
its share.

{EXIT_CODES_HELP}"""

METRICS = ("lncc", "mse", "mi", "mind")


def add_to(app: typer.Typer) -> None:
    @app.command("register", help=HELP, no_args_is_help=True)
    @handle_errors
    def register(
        moving: Optional[Path] = typer.Argument(None, help="Moving image (NIfTI, MGH, MHA, NRRD)."),
        fixed: Optional[Path] = typer.Argument(None, help="Fixed image: the output grid."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        moving_labels: Optional[Path] = typer.Option(None, "--moving-labels", help="Label map on the moving grid, warped with nearest neighbour."),
        metric: Optional[str] = typer.Option(None, "--metric", help="lncc | mse | mi | mind (default: the preset's, lncc)."),
        config: str = typer.Option("default", "--config", help="Preset name (fast, default, accurate, ct, mri) or a .yaml path."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="Random seed (0 to 2**32-1)."),
        fixed_mask: Optional[Path] = typer.Option(None, "--fixed-mask", help="Mask on the fixed grid (non-zero = compare there)."),
        moving_mask: Optional[Path] = typer.Option(None, "--moving-mask", help="Mask on the moving grid."),
        qc: bool = typer.Option(False, "--qc", help="Also write the QC report (qc.png, qc.html, qc.json)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        model: Optional[Path] = typer.Option(None, "--model", help="Trained cascade: a shipped model's name (brain; see 'regkit models') or a checkpoint (regkit train). Starts from its prediction."),
        refine: int = typer.Option(0, "--refine", min=0, help="With --model: optimiser iterations after the prediction."),
        pairs: Optional[Path] = typer.Option(None, "--pairs", help="Manifest of pairs (CSV/JSON) to register into DIR/pairNNN/."),
        default_value: float = typer.Option(0.0, "--default-value", help="warped.nii.gz's value where the moving image does not reach (ITK/ANTs: 0; CT: e.g. -1000). Labels get 0."),
    ) -> None:
        from regkit.errors import InputError

        if default_value != default_value or abs(default_value) == float("inf"):  # NaN voxels regkit itself refuses to read
            raise InputError(f"--default-value must be a finite number, got {default_value}")
        if metric is not None and metric not in METRICS:
            raise InputError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if refine and model is None:
            raise InputError("--refine needs --model (it refines a trained cascade's prediction)")
        if model is not None and refine == 0:
            unused = [name for name, value in (("--metric", metric), ("--config", config != "default"), ("--fixed-mask", fixed_mask),
                                               ("--moving-mask", moving_mask), ("--seed", seed is not None)) if value]
            if unused:  # they set the optimiser, which --refine 0 does not run
                raise InputError(f"{', '.join(unused)} set the optimiser's refinement, and --refine 0 runs none "
                                 "(the prediction is the result); add --refine N or drop them")
        model_name = str(model) if model is not None else None
        if model is not None:
            from regkit.nn.shipped import resolve_model

            model = resolve_model(model)
        if pairs is not None:
            given = [name for name, value in (("MOVING/FIXED", moving or fixed), ("--moving-labels", moving_labels),
                                              ("--qc", qc), ("--fixed-mask", fixed_mask), ("--moving-mask", moving_mask),
                                              ("--seed", seed is not None)) if value]
            if given:  # they would be silently ignored: one pair's files do not fit a cohort
                raise InputError(f"--pairs takes the images (and moving_labels) from the manifest; {', '.join(given)} "
                                 "cannot be combined with it", pairs)
            from regkit.cli.common import resolve_device, setup_logging
            from regkit.nn.register import register_cohort

            setup_logging()  # a line per pair: which were registered, which failed and why

            rows = register_cohort(pairs, out, model, refine, config, metric, resolve_device(device), force,
                                   default_value=default_value)
            typer.echo(f"regkit register: {len(rows)} pair(s) registered into {out}", err=True)
            return
        if moving is None or fixed is None:
            raise InputError("give MOVING and FIXED images (or --pairs MANIFEST)")
        start, settings = None, config
        if model is not None:
            from regkit.cli.common import resolve_device
            from regkit.nn.register import model_start

            start, settings = model_start(model, refine, config, metric, resolve_device(device))
        run(moving, fixed, out, moving_labels=moving_labels, metric=metric, config=settings, device=device, seed=seed,
            fixed_mask=fixed_mask, moving_mask=moving_mask, qc=qc, progress=progress, force=force, start=start,
            default_value=default_value, model_name=model_name, refine=refine)


def run(moving: Path, fixed: Path, out: Path, moving_labels: Optional[Path] = None, metric: Optional[str] = None,
        config: str = "default", device: str = "auto", seed: Optional[int] = None, fixed_mask: Optional[Path] = None,
        moving_mask: Optional[Path] = None, qc: bool = False, progress: bool = True, force: bool = False,
        initial_transform=None, start=None, default_value: float = 0.0, model_name: Optional[str] = None,
        refine: int = 0) -> None:
    """The body of ``regkit register`` (kept callable so other options, e.g. a learned start, reuse it).

    ``start(moving, fixed)``, when given, computes the initial transform from the images read here
    (a trained cascade's prediction); its time is logged as ``predict_seconds``."""
    t0 = time.perf_counter()
    from regkit.cli.common import resolve_device, setup_logging
    from regkit.checks import check_has_contrast, check_mask_not_empty
    from regkit.errors import InputError, RegistrationError
    from regkit.io.atomic import atomic_group, note_input
    from regkit.io.images import load_image, load_label, stored_integer_dtype
    from regkit.optimize import load_config, register
    from regkit.optimize.outputs import check_outputs, summary_line, write_result

    setup_logging()
    cfg = load_config(config, metric=metric)  # bad settings fail before any image is read
    note_input(moving, fixed, moving_labels, fixed_mask, moving_mask)  # never an output, even with --force
    check_outputs(out, moving_labels is not None, force, qc=qc)
    moving_img, fixed_img = load_image(moving), load_image(fixed)
    check_has_contrast(moving_img, moving)
    check_has_contrast(fixed_img, fixed)
    labels = load_label(moving_labels) if moving_labels is not None else None
    fmask = load_label(fixed_mask) if fixed_mask is not None else None
    mmask = load_label(moving_mask) if moving_mask is not None else None
    for mask, path in ((fmask, fixed_mask), (mmask, moving_mask)):
        if mask is not None:
            check_mask_not_empty(mask, path)
    _check_memory(fixed_img, moving_img, cfg, fixed)
    predict_seconds = None
    if start is not None:
        t_predict = time.perf_counter()
        initial_transform = start(moving_img, fixed_img)
        predict_seconds = time.perf_counter() - t_predict
    try:
        result = register(moving_img, fixed_img, config=cfg, device=resolve_device(device), seed=seed,
                          initial_transform=initial_transform, fixed_mask=fmask, moving_mask=mmask, progress=progress,
                          default_value=default_value)
    except RegistrationError as e:  # name the pair: the library does not know the file names
        raise RegistrationError(f"{moving} -> {fixed}: {e}") from e
    except InputError as e:  # e.g. "moving image is too small to register"
        if e.path is not None:
            raise
        raise InputError(f"{moving} -> {fixed}: {e}") from e
    if predict_seconds is not None:  # the optimiser's seconds do not include it; the total does, as in a cohort
        result.log["predict_seconds"] = round(predict_seconds, 3)
        result.log["total_seconds"] = round(result.log["total_seconds"] + predict_seconds, 3)
    if model_name is not None:
        result.log.update(model=model_name, refine=int(refine))
    t_write = time.perf_counter()
    with atomic_group(out, replace_previous=force):  # the QC files appear with the others, or nothing does
        written = write_result(result, out, labels, force=force,
                               labels_dtype=stored_integer_dtype(moving_labels) if moving_labels is not None else None)
        if qc:
            written += _write_qc(fixed_img, moving_img, result.transform, out, labels, force, default_value)
    typer.echo(summary_line(result.log, out, len(written), time.perf_counter() - t0,
                            write_seconds=time.perf_counter() - t_write), err=True)


def _check_memory(fixed_img, moving_img, cfg, path: Path) -> None:
    """Refuse early (exit 3) when the finest level would not fit in memory."""
    try:
        from regkit import resources
    except ImportError:  # optional module
        return
    spacing = min(fixed_img.spacing)
    scale = lambda s: [max(2, int(n * spacing / max(s, spacing)) + 1) for n in fixed_img.shape]  # noqa: E731
    levels = [scale(l.spacing_mm) for l in cfg.deformable.levels] or [scale(l.spacing_mm) for l in cfg.affine.levels]
    controls = [scale(l.control_spacing_mm) for l in cfg.deformable.levels]
    est = resources.estimate_registration(fixed_img.shape, moving_img.shape, levels, controls, metric=cfg.metric,
                                          mi_bins=cfg.mi_bins)
    resources.check_memory(est.total, f"registering on a {'x'.join(map(str, fixed_img.shape))} grid", path=path)


def _write_qc(fixed_img, moving_img, transform, out: Path, labels, force: bool, default_value: float = 0.0) -> list:
    try:
        from regkit.report import write_qc
    except ImportError:
        typer.echo("regkit register: --qc skipped (regkit.report is not available in this install)", err=True)
        return []
    from regkit.resample import resample

    fixed_labels = None
    qc_labels = None
    if labels is not None:
        # the QC draws fixed-grid contours: use the warped moving labels
        fixed_labels = resample(labels, transform, fixed_img)
        qc_labels = fixed_labels
    info = write_qc(fixed_img, moving_img, transform, out, labels=qc_labels, force=force, default_value=default_value)
    return [Path(p) for p in info.get("files", [])]
