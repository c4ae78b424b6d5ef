"""`regkit register`: optimise a transform for one pair (centre of mass → affine → SVF)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors
from regkit.similarities import METRIC_NAMES

HELP = f"""Register MOVING to FIXED by optimisation (no training needed) and write the results into --out DIR.

Pipeline on one pyramid: centre-of-mass start, 12-parameter affine (coarse to fine), then a
diffeomorphic stationary velocity field at increasing resolution; the moving image is sampled once
per step through the whole chain. The transform maps fixed points to moving points: x -> A(x + u(x)).

DIR receives: warped.nii.gz; warped_labels.nii.gz (with --moving-labels, nearest neighbour);
the WHOLE transform both ways: field.nii.gz (fixed->moving displacement on the fixed grid, ITK/ANTs
convention: LPS mm, vector image), inverse_field.nii.gz (moving->fixed on the moving grid) and
transform.regkit.safetensors (exact); its parts under ANTs' names, whose number is their place in
the chain: 0GenericAffine.mat (ITK affine), 1Warp.nii.gz (the deformable part alone) and
1InverseWarp.nii.gz (its inverse), applied as ANTs' own: `regkit apply DIR/1Warp.nii.gz
DIR/0GenericAffine.mat ...` forward, `regkit apply "[DIR/0GenericAffine.mat,1]"
DIR/1InverseWarp.nii.gz ...` back; log.txt and log.json (the command line, each input's path and
SHA-256, versions, device, threads, seed, settings, per-level losses). Existing files are never
overwritten without --force.

MOVING comes first, then FIXED (antsRegistration and antspyx take the fixed image first); the
summary line names both, and a note follows when the file names suggest they were swapped.

--config picks a preset (fast, default, accurate, ct, mri; see configs/) or a YAML file holding
only the keys it changes, layered on the preset its `base:` key names (default: default; a copy of
a preset file says `base: null` and registers as that preset); unknown keys are refused. --set
KEY=VALUE changes one setting after that (repeatable; dotted keys, list items by index: --set
deformable.levels.1.iterations=20). --metric overrides the preset's
similarity: lncc (same contrast, default), mse, mi (different contrasts: T1/T2, CT/MRI) or mind.
--type rigid|affine stops after the affine stage (rigid: rotation + translation only);
--initial-transform FILE starts from a transform (an affine starts the affine stage).

--threads N (default: the cores this process may use, at most 8 — never the machine's current
load) with --seed S gives byte-identical outputs on the same machine. On a terminal, progress
bars; redirected to a file, one line per pyramid level. --quiet prints errors only, --verbose the
per-level log as well.

Examples:

  regkit register moving.nii.gz fixed.nii.gz --out result/

  regkit register moving.nii.gz fixed.nii.gz --out result/ --moving-labels moving_labels.nii.gz --qc

  regkit register t2.nii.gz t1.nii.gz --out result/ --metric mi --config accurate

  regkit register ct_a.nii.gz ct_b.nii.gz --out result/ --config ct --default-value -1000 --device cuda --force

  regkit register moving.nii.gz fixed.nii.gz --out result/ --config my_settings.yaml --seed 1 --threads 2

  regkit register moving.nii.gz fixed.nii.gz --out result/ --config fast --set deformable.regularization_weight=0.5

  regkit register moving.nii.gz fixed.nii.gz --out result/ --type rigid --initial-transform start.mat

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



def add_to(app: typer.Typer) -> None:
    @app.command("register", help=HELP, no_args_is_help=True)
    @handle_errors
    def register(
        moving: Optional[Path] = typer.Argument(None, help="Moving image (NIfTI, MGH, MHA, NRRD)."),
        fixed: Optional[Path] = typer.Argument(None, help="Fixed image: the output grid."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        moving_labels: Optional[Path] = typer.Option(None, "--moving-labels", help="Label map on the moving grid, warped with nearest neighbour."),
        metric: Optional[str] = typer.Option(None, "--metric", help=f"{' | '.join(METRIC_NAMES)} (default: the preset's, lncc)."),
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
        kind: str = typer.Option("deformable", "--type", help="rigid | affine | deformable (ANTs' Rigid, Affine, SyN): rigid and affine stop after the affine stage, rigid keeps rotation + translation only."),
        initial_transform: Optional[Path] = typer.Option(None, "--initial-transform", help="Start from this transform file (fixed -> moving; ANTs' [FILE,1] inverts it): an affine starts the affine stage, a field replaces it."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024, help="CPU threads (default: the cores this process may use, at most 8; the same on every run, so a --seed run repeats exactly)."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Change one setting of the preset/config: KEY=VALUE, e.g. --set deformable.regularization_weight=2 --set deformable.levels.1.iterations=20 (repeatable)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only (no progress, no summary line)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print a line per pyramid level and the settings used."),
    ) -> None:
        from regkit.errors import InputError

        if default_value != default_value or abs(default_value) == float("inf"):  # NaN voxels regkit itself refuses to read
            raise InputError(f"--default-value must be a finite number, got {default_value}")
        if metric is not None and metric not in METRIC_NAMES:
            raise InputError(f"--metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
        if refine and model is None:
            raise InputError("--refine needs --model (it refines a trained cascade's prediction)")
        if model is not None and refine == 0:
            unused = [name for name, value in (("--metric", metric), ("--config", config != "default"), ("--fixed-mask", fixed_mask),
                                               ("--moving-mask", moving_mask), ("--seed", seed is not None)) if value]
            if unused:  # they set the optimiser, which --refine 0 does not run
                raise InputError(f"{', '.join(unused)} set the optimiser's refinement, and --refine 0 runs none "
                                 "(the prediction is the result); add --refine N or drop them")
        stage_sets = STAGES.get(kind.lower())
        if stage_sets is None:
            raise InputError(f"--type must be rigid, affine or deformable (ANTs: Rigid, Affine, SyN), got {kind!r}")
        if model is not None and (stage_sets or initial_transform is not None):
            raise InputError("--model starts from the cascade's prediction; it cannot be combined with "
                             f"{'--initial-transform' if initial_transform is not None else '--type ' + kind}")
        from regkit.optimize import load_config

        # the preset (or the YAML layered on one), then --type and each --set in order; checked before any image is read
        config = load_config(config, sets=[*stage_sets, *(sets or [])], metric=metric, threads=threads)
        if quiet:
            progress = False
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
            from regkit.workflows.cohort import register_cohort

            setup_logging(verbose=verbose, quiet=quiet)  # a line per pair (with an ETA): which were registered, which failed and why

            rows = register_cohort(pairs, out, model, refine, config, metric, resolve_device(device), force,
                                   default_value=default_value)
            typer.echo(f"regkit register: {len(rows)} pair(s) registered into {out}", err=True)
            return
        if moving is None or fixed is None:
            raise InputError("give MOVING and FIXED images (or --pairs MANIFEST)")
        start, settings = None, config
        if model is not None:
            from regkit.cli.common import resolve_device
            from regkit.workflows.predict_and_refine import model_start

            start, settings = model_start(model, refine, config, metric, resolve_device(device))
        start_transform = None
        if initial_transform is not None:
            from regkit.cli.apply import load_chain

            start_transform = load_chain([initial_transform], inverse=False)
        run(moving, fixed, out, moving_labels=moving_labels, metric=metric, config=settings, device=device, seed=seed,
            fixed_mask=fixed_mask, moving_mask=moving_mask, qc=qc, progress=progress, force=force, start=start,
            default_value=default_value, model_name=model_name, refine=refine, initial_transform=start_transform,
            initial_transform_path=initial_transform, quiet=quiet, verbose=verbose)


#: ``--type`` -> the settings it changes (ANTs' and antspyx's names too)
STAGES = {"deformable": [], "syn": [], "affine": ["deformable.enabled=false"],
          "rigid": ["deformable.enabled=false", "affine.rigid=true"]}


def run(moving: Path, fixed: Path, out: Path, moving_labels: Optional[Path] = None, metric: Optional[str] = None,
        config: str = "default", device: str = "auto", seed: Optional[int] = None, fixed_mask: Optional[Path] = None,
        moving_mask: Optional[Path] = None, qc: bool = False, progress: bool = True, force: bool = False,
        initial_transform=None, start=None, default_value: float = 0.0, model_name: Optional[str] = None,
        refine: int = 0, initial_transform_path: Optional[Path] = None, quiet: bool = False,
        verbose: bool = False) -> None:
    """The body of ``regkit register`` (kept callable so other options, e.g. a learned start, reuse it).

    ``start(moving, fixed)``, when given, computes the initial transform from the images read here
    (a trained cascade's prediction); its time is logged as ``predict_seconds``."""
    t0 = time.perf_counter()
    from regkit.cli.common import resolve_device, setup_logging
    from regkit.io.results import summary_line
    from regkit.optimize import load_config
    from regkit.workflows.pair_files import PairFiles, register_files

    setup_logging(verbose=verbose, quiet=quiet)
    cfg = load_config(config, metric=metric)  # bad settings fail before any image is read
    if initial_transform_path is not None:  # ANTs' [FILE,1]: the file itself
        from regkit.cli.apply import transform_argument

        initial_transform_path = transform_argument(initial_transform_path)[0]
    files = PairFiles(moving, fixed, moving_labels, fixed_mask=fixed_mask, moving_mask=moving_mask,
                      initial_transform=initial_transform_path)

    def log_extra() -> dict:
        extra = {"model": model_name, "refine": int(refine)} if model_name is not None else {}
        if initial_transform_path is not None:
            extra["initial_transform_file"] = str(initial_transform_path)
        return {**extra, **provenance({"moving": moving, "fixed": fixed, "moving_labels": moving_labels, "fixed_mask": fixed_mask,
                                       "moving_mask": moving_mask, "initial_transform": initial_transform_path})}

    done = register_files(files, out, cfg, resolve_device(device), seed, initial_transform, start, qc, progress,
                          force, default_value, log_extra)
    if verbose:
        from regkit.io.results import log_text

        typer.echo(log_text(done.result.log).rstrip("\n"), err=True)
    if not quiet:
        typer.echo(summary_line(done.result.log, out, len(done.written), time.perf_counter() - t0,
                                write_seconds=done.write_seconds, moving=moving, fixed=fixed), err=True)
        note = swapped_note(moving, fixed)
        if note:
            typer.echo(note, err=True)


SWAP_WORDS_FIXED = ("fixed", "template", "atlas", "reference", "mni")
SWAP_WORDS_MOVING = ("moving",)


def swapped_note(moving: Path, fixed: Path) -> Optional[str]:
    """A plain-words note when the file names say MOVING and FIXED were given the other way round
    (antsRegistration and antspyx take the fixed image first; regkit, like the transform it
    writes, takes MOVING first), else None."""
    m, f = Path(moving).name.lower(), Path(fixed).name.lower()

    def says(name: str, words) -> bool:
        return any(w in name for w in words)

    if (says(m, SWAP_WORDS_FIXED) and not says(f, SWAP_WORDS_FIXED)) or (says(f, SWAP_WORDS_MOVING) and not says(m, SWAP_WORDS_MOVING)):
        return (f"regkit register: note: MOVING is {moving} and FIXED is {fixed} — this run moved {Path(moving).name} onto "
                f"{Path(fixed).name}'s grid. regkit takes MOVING first; antsRegistration and antspyx take the fixed image "
                "first. If the names are right, swap the two arguments.")
    return None


def provenance(inputs) -> dict:
    """What log.json records to reproduce a run: the command line, every input file's absolute
    path and SHA-256, and the versions of regkit and the libraries that shape the result."""
    import hashlib
    import shlex
    import sys
    from importlib.metadata import PackageNotFoundError, version

    def sha256(path: Path) -> Optional[str]:
        if not path.is_file():
            return None  # a DICOM series folder: its path is recorded
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def of(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    files = {role: {"path": str(Path(p).resolve()), "sha256": sha256(Path(p))} for role, p in inputs.items() if p is not None}
    versions = {name: of(name) for name in ("regkit", "torch", "numpy", "nibabel", "SimpleITK")}
    versions["python"] = sys.version.split()[0]
    ours = Path(sys.argv[0]).name in ("regkit", "__main__.py")  # the script, or python -m regkit.cli
    return {"command_line": shlex.join(["regkit", *sys.argv[1:]] if ours else sys.argv), "inputs": files, "versions": versions}
