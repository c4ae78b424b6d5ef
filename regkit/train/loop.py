"""The training loop: data → cascade → loss → Adam, with validation, checkpoints, logs, DDP.

Determinism and resume: the pair order of epoch ``e`` comes from ``DistributedSampler`` with
``seed`` and ``set_epoch(e)``, and the augmentation of step ``s`` on rank ``r`` from a generator
seeded with ``(seed, s, r)``; so a run resumed from a checkpoint at step ``s`` sees exactly the
batches an uninterrupted run would have seen.

SIGINT/SIGTERM finish the current step, write ``last.safetensors`` and stop (every rank at the
same step). Only rank 0 writes files.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from regkit.errors import InputError, OutputExistsError
from regkit.io.atomic import check_folder, write_text
from regkit.train.config import TrainConfig
from regkit.train.distributed import Distributed
from regkit.train.outputs import BEST, CONFIG_YAML, LAST, LOG_CSV, prepare_run_folder, record_written

log = logging.getLogger(__name__)

LOG_COLUMNS = ["step", "epoch", "loss", "similarity", "regularization", "dice", "affine_l2", "affine_stage", "lr", "seconds",
               "val_dice", "val_folding_percent", "val_similarity"]


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    last: Optional[Path]
    best: Optional[Path]
    best_metric: Optional[float]
    interrupted: Optional[str] = None
    losses: List[float] = field(default_factory=list)
    validation: Dict[str, float] = field(default_factory=dict)
    model: Optional[torch.nn.Module] = field(default=None, repr=False)  # the trained CascadeNet


class StopRequest:
    """Records SIGINT/SIGTERM instead of dying mid-step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name


def build_pairs(data) -> list:
    from regkit.io.manifests import all_ordered_pairs, read_manifest, subjects_in_folder

    if data.manifest is not None:
        return read_manifest(data.manifest)
    return all_ordered_pairs(subjects_in_folder(data.subjects, data.label_suffix))


def build_datasets(config: TrainConfig, device) -> tuple:
    """``(training set, validation set or None)``: image pairs (a manifest or a subjects folder) or
    pairs synthesised from label maps (``data.labelmaps``), whose validation, without a
    ``val_manifest``, is ``val_pairs`` (default 4) fixed synthetic pairs of those maps."""
    from regkit.io.manifests import read_manifest
    from regkit.train.data import PairDataset

    data = config.data
    if data.labelmaps is not None:
        from regkit.train.synth import LabelMapDataset, labelmaps_in_folder, validation_pairs

        maps = labelmaps_in_folder(data.labelmaps)
        train_set = LabelMapDataset(maps, config.model, config.augment, config.synth, data.label_values, device, seed=config.seed)
        if data.val_manifest is None:
            chosen = validation_pairs(config.val_pairs or 4, len(maps))
            return train_set, train_set.subset(chosen, seed=config.seed + 1_000_003)
    else:
        train_set = PairDataset(build_pairs(data), config.model, config.augment, data.num_labels, data.cache,
                                device=device, label_values=data.label_values)
    val_set = None
    if data.val_manifest is not None:  # the training's label channels, whatever values validation holds
        val_set = PairDataset(read_manifest(data.val_manifest), config.model, None, data.num_labels,
                              data.cache, device=device, label_values=train_set.label_values)
    return train_set, val_set


def make_optimizer(model, optim) -> torch.optim.Optimizer:
    """Adam; the localisation net learns at ``lr × affine_lr_factor``."""
    affine = [p for n, p in model.named_parameters() if n.startswith("affine_net.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("affine_net.")]
    groups = [{"params": rest, "lr": optim.lr}]
    if affine:
        groups.append({"params": affine, "lr": optim.lr * optim.affine_lr_factor})
    return torch.optim.Adam(groups, lr=optim.lr, weight_decay=optim.weight_decay)


def learning_rate_factor(optim, step: int) -> float:
    """Multiplier of every group's base learning rate at ``step`` (0-based; a pure function of
    the step, so a resumed run continues the schedule exactly)."""
    if optim.lr_schedule == "constant":
        return 1.0
    progress = min(step / max(optim.steps - 1, 1), 1.0)
    return optim.final_lr_factor + (1 - optim.final_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 62))


class Batches:
    """Which pairs step ``s`` uses on this rank (a pure function of seed, epoch and step)."""

    def __init__(self, dataset, dist: Distributed, batch_size: int, seed: int):
        from torch.utils.data import DistributedSampler

        self.sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch < 1:
            raise InputError(f"{len(dataset)} training pair(s) are fewer than batch_size × processes = {batch_size * dist.world_size}")
        self._epoch, self._order = -1, []

    def epoch_of(self, step: int) -> int:
        return step // self.per_epoch

    def indices(self, step: int) -> List[int]:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


class RunLog:
    """CSV log (appended on resume) and TensorBoard when the ``tensorboard`` package is installed."""

    def __init__(self, out_dir: Path, append: bool, after_step: int = 0):
        """``append``: continue the file of a run resumed at ``after_step``; rows logged after that
        step (by the run before it was killed, after its last checkpoint) are dropped, since the
        resumed run logs those steps again."""
        self.path = out_dir / LOG_CSV
        new = not (append and self.path.exists())
        columns = LOG_COLUMNS
        if not new:  # a run resumed by a newer regkit keeps its file's columns
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or LOG_COLUMNS)
                kept = [row for row in reader if _step_of(row) <= after_step]
            text = io.StringIO()  # the rows to keep, replaced atomically: a kill now loses no log
            writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(kept)
            write_text(self.path, text.getvalue(), force=True)
        self._file = self.path.open("w" if new else "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if new:
            self._csv.writeheader()
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            log.debug("tensorboard is not installed; logging to CSV only")

    def write(self, row: Dict[str, float]) -> None:
        self._csv.writerow(row)
        self._file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, int(row["step"]))

    def images(self, step: int, slices: Dict[str, Tensor]) -> None:
        """2-D slices ``(H, W)`` in [0, 1] (e.g. a validation pair before/after) into TensorBoard."""
        if self.tensorboard is not None:
            for tag, image in slices.items():
                self.tensorboard.add_image(tag, image.clamp(0, 1).flip(-1).T[None], step, dataformats="CHW")

    def close(self) -> None:
        self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


@torch.no_grad()
def validate(model, dataset, objective, device, limit: Optional[int] = None,
             slices: Optional[Dict[str, Tensor]] = None) -> Dict[str, float]:
    """Mean Dice (labels warped nearest-neighbour on the network grid), folding % (det J ≤ 0 of
    the whole mapping on the grid) and similarity over the validation pairs. ``slices``, when
    given, receives the first pair's middle axial slices: fixed, moving (before) and warped (after)."""
    from regkit import space
    from regkit.image import Image
    from regkit.metrics import dice, jacobian_determinant, summarize
    from regkit.resample import warp

    model.eval()
    dices, folds, sims = [], [], []
    grid = model.grid_affine
    identity = space.world_grid(grid, model.config.grid_shape, device=device)
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = {k: v[None].to(device) for k, v in dataset.sample(i).items()}
        outputs = model(sample["moving"], sample["fixed"])
        if slices is not None and i == 0:
            z = sample["fixed"].shape[-1] // 2
            slices.update({"val/fixed": sample["fixed"][0, 0, :, :, z].cpu(), "val/moving_before": sample["moving"][0, 0, :, :, z].cpu(),
                           "val/warped_after": outputs["warped"][0, 0, :, :, z].cpu()})
        sims.append(float(objective.similarity(sample["fixed"], outputs["warped"])))
        displacement = (outputs["points"] - identity).movedim(-1, 1)
        folds.append(100.0 * float((jacobian_determinant(displacement.cpu(), grid) <= 0).float().mean()))
        if "moving_labels" in sample:
            warped = warp(sample["moving_labels"].float(), grid, outputs["points"], mode="nearest").round().long()
            per_label = dice(Image(sample["fixed_labels"][0].cpu(), grid, True), Image(warped[0].cpu(), grid, True))
            dices.append(summarize(per_label))
    model.train()
    out = {"val_similarity": sum(sims) / len(sims), "val_folding_percent": sum(folds) / len(folds)}
    if dices:
        out["val_dice"] = sum(dices) / len(dices)
    return out


def train(config: TrainConfig, out_dir: Optional[Path] = None, resume: Optional[Path] = None, device: str = "cpu",
          force: bool = False, progress: bool = True, callback: Optional[Callable[[int, Dict[str, float]], None]] = None) -> TrainResult:
    """Train a cascade as ``config`` says; returns where the checkpoints are.

    Args:
        out_dir: run folder (default ``config.out_dir``): ``last.safetensors``,
            ``best.safetensors`` (by validation Dice, or similarity without labels), ``log.csv``,
            ``config.yaml``, ``tensorboard/``.
        resume: a checkpoint to continue from (same model config); the step count, optimizer
            and RNG state continue where it stopped, up to ``config.optim.steps``.
        force: allow starting a new run in a folder that already has checkpoints.
        callback: called on every rank after each step with ``(step, loss terms)``.
    """
    from regkit.nn.cascade import CascadeNet
    from regkit.train.data import collate
    from regkit.train.objective import CascadeLoss
    from regkit.train.state import save_training_state

    dist = Distributed.from_env(device)
    out = check_folder(out_dir or config.out_dir)
    if dist.is_main:
        _check_run_folder(out, resume, force)
    torch.manual_seed(config.seed)
    model = CascadeNet(config.model).to(dist.device)
    optimizer = make_optimizer(model, config.optim)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    step, best_metric = _restore(resume, model, optimizer, config, out) if resume is not None else (0, None)
    train_set, val_set = _readable_datasets(config, dist.device if config.data.prepare_on == "device" else "cpu")
    objective = CascadeLoss(config.loss, config.model, train_set.num_labels or 0)
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.startswith("cuda") else None)
    batches = Batches(train_set, dist, config.optim.batch_size, config.seed)

    run_log, bar = _open_run(out, resume, config, step, progress, val_set is not None, force) if dist.is_main else (None, None)
    stop = StopRequest()
    stop.install()
    result = TrainResult(step=step, out_dir=out, last=None, best=None, best_metric=best_metric)

    def save(path: Path) -> None:
        save_training_state(path, model, optimizer, step, config.model, config, best_metric,
                            extra={"world_size": dist.world_size, "epoch": batches.epoch_of(step)})
        record_written(out, path.name)

    first_step, run_started = step, time.perf_counter()
    try:
        model.train()
        saved_at = -1
        while step < config.optim.steps:
            started = time.perf_counter()
            generator = step_generator(config.seed, step, dist.rank)
            batch = collate([train_set.sample(i, generator) for i in batches.indices(step)])
            terms = _optimizer_step(net, model, optimizer, objective, batch, dist.device, config.optim, base_lrs, step)
            step += 1
            result.losses.append(terms["loss"])
            if callback is not None:
                callback(step, terms)
            row = {"step": step, "epoch": batches.epoch_of(step - 1), "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - started, 3), **terms}
            if val_set is not None and (step % config.val_every == 0 or step == config.optim.steps):
                if dist.is_main:
                    slices: Dict[str, Tensor] = {}
                    metrics = validate(model, val_set, objective, dist.device, config.val_pairs, slices)
                    run_log.images(step, slices)
                    row.update(metrics)
                    result.validation = metrics
                    score = metrics.get("val_dice", -metrics["val_similarity"])
                    if best_metric is None or score > best_metric:
                        best_metric = score
                        save(out / BEST)
                        result.best = out / BEST
                dist.barrier()
            if dist.is_main:
                _report_step(row, step, config, run_log, bar, first_step, run_started)
                if step % config.checkpoint_every == 0:
                    save(out / LAST)
                    saved_at = step
            if dist.any(stop.signal is not None):
                result.interrupted = stop.signal or "signal on another rank"
                break
        if dist.is_main and saved_at != step:
            save(out / LAST)
        dist.barrier()
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if run_log is not None:
            run_log.close()
            record_written(out, LOG_CSV)
    result.step, result.best_metric, result.model = step, best_metric, model
    result.last = out / LAST
    if result.best is None and resume is not None and (out / BEST).exists():  # written before the resume (same folder)
        result.best = out / BEST
    dist.close()
    return result


def _check_run_folder(out: Path, resume: Optional[Path], force: bool) -> None:
    """OutputExistsError when ``out`` holds a run (``last.safetensors``) this one would overwrite
    without ``force``: a new run, another folder's run resumed here, or an older checkpoint of it."""
    if not (out / LAST).exists() or force:
        return
    if resume is None:
        raise OutputExistsError(f"holds a previous run ({LAST}); pass --resume {out / LAST} to continue or --force to start over", out)
    if Path(resume).resolve().parent != out.resolve():  # resuming ANOTHER run here would overwrite this one
        raise OutputExistsError(f"holds another run ({LAST}); resuming {resume} here would overwrite it: "
                                "give a new --out, or --force", out)
    if Path(resume).resolve() != (out / LAST).resolve():  # e.g. --resume run/best.safetensors: an older step
        from regkit.nn.checkpoint import read_checkpoint

        newer, older = read_checkpoint(out / LAST).step, read_checkpoint(Path(resume)).step
        if newer > older:
            raise OutputExistsError(f"{LAST} is at step {newer}, after {Path(resume).name} (step {older}); resuming "
                                    f"from step {older} here would overwrite it and cut log.csv: give a new --out, "
                                    "or --force", out)


def _restore(resume: Path, model, optimizer, config: TrainConfig, out: Path) -> Tuple[int, Optional[float]]:
    """``(step, best metric)`` of the checkpoint ``resume``, whose weights, optimizer and RNG state
    are loaded into ``model`` and ``optimizer``; the config's weight decay applies from now on."""
    from regkit.train.state import restore_training_state

    ckpt = restore_training_state(Path(resume), model, optimizer, config.model)
    step, best_metric = ckpt.step, ckpt.metadata.get("best_metric")
    for group in optimizer.param_groups:  # the optimizer state carries the old run's; the config's applies
        group["weight_decay"] = config.optim.weight_decay
    if Path(resume).resolve().parent != out.resolve():  # another folder's run (--force): its best is not here
        best_metric = None
    if step >= config.optim.steps:
        log.warning("%s is at step %d and the recipe's optim.steps is %d: no step to run; pass --steps N "
                    "(N > %d) to train on", resume, step, config.optim.steps, step)
    return step, best_metric


def _readable_datasets(config: TrainConfig, data_device) -> tuple:
    """The training and validation datasets (:func:`build_datasets`), every file checked readable
    and the labels checked against a Dice loss before the first step."""
    train_set, val_set = build_datasets(config, data_device)
    _check_labels_for_dice(train_set.pairs, config)
    train_set.check_readable()
    if val_set is not None:
        val_set.check_readable()
    return train_set, val_set


def _open_run(out: Path, resume: Optional[Path], config: TrainConfig, step: int, progress: bool, validates: bool,
              force: bool):
    """``(run log, progress bar or None)`` of the run folder (main rank): ``config.yaml`` written and
    recorded, the log continued when the run resumes itself; otherwise the files a previous run
    recorded writing are removed first (:func:`regkit.train.outputs.prepare_run_folder`)."""
    same_run = resume is not None and Path(resume).resolve().parent == out.resolve()
    if not same_run:  # starting over, or resuming another folder's run: only recorded files go
        for removed in prepare_run_folder(out, validates=validates, force=force):
            log.info("%s: removed the previous run's %s", out, removed.name)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out / CONFIG_YAML, config)
    record_written(out, CONFIG_YAML)
    run_log = RunLog(out, append=same_run, after_step=step)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.optim.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    return run_log, bar


def _optimizer_step(net, model, optimizer, objective, batch: Dict[str, Tensor], device, optim, base_lrs: List[float],
                    step: int) -> Dict[str, float]:
    """One step on ``batch``: forward, loss, backward, the scheduled learning rate, gradient
    clipping, the update. Returns the loss terms (``loss``: the total)."""
    batch = {k: v.to(device) for k, v in batch.items()}
    outputs = net(batch["moving"], batch["fixed"])
    loss, terms = objective(outputs, batch, model.grid_affine)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    factor = learning_rate_factor(optim, step)
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    if optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
    optimizer.step()
    terms["loss"] = float(loss.detach())
    return terms


def _report_step(row: Dict[str, float], step: int, config: TrainConfig, run_log: "RunLog", bar, first_step: int,
                 run_started: float) -> None:
    """The step's row into the log (every ``log_every`` steps, validation steps and the last) and
    the progress bar, or a progress line every ``10 × log_every`` steps without one."""
    if step % config.log_every == 0 or "val_similarity" in row or step == config.optim.steps:
        run_log.write(row)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
    elif step % (10 * config.log_every) == 0 or step == config.optim.steps:
        log.info("%s", progress_line(step, config.optim.steps, first_step, time.perf_counter() - run_started, row))


def progress_line(step: int, total: int, first_step: int, elapsed_s: float, row: Dict[str, float]) -> str:
    """``step 400/4000 (10 %), loss 0.4210, val Dice 0.61, 0.52 s/step, ETA 31 min`` — the
    progress of a run without a progress bar (``--no-progress``, log files)."""
    per_step = elapsed_s / max(step - first_step, 1)
    eta = per_step * (total - step)
    eta_text = f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s"
    val = f", val Dice {row['val_dice']:.4f}" if "val_dice" in row else ""
    return (f"step {step}/{total} ({100 * step / total:.0f} %), loss {row.get('loss', float('nan')):.4f}{val}, "
            f"{per_step:.3f} s/step, ETA {eta_text}")


def _check_labels_for_dice(pairs, config: TrainConfig) -> None:
    """InputError when the Dice term is on and only SOME training pairs have labels: the dataset
    then drops labels for every pair, which turned the Dice term off for the whole run silently."""
    labelled = [p.has_labels for p in pairs]
    if config.loss.dice_weight > 0 and not any(labelled):
        log.warning("no training pair has labels: the Dice term (loss.dice_weight %g) is off for this run; "
                    "add moving_labels,fixed_labels to the data, or set dice_weight: 0 to silence this", config.loss.dice_weight)
    if config.loss.dice_weight > 0 and any(labelled) and not all(labelled):
        first = pairs[labelled.index(False)]
        raise InputError(f"{sum(labelled)} of {len(labelled)} training pairs have labels, but the Dice term "
                         f"(loss.dice_weight {config.loss.dice_weight:g}) needs them on every pair; "
                         f"{first.moving} -> {first.fixed} has none (add them, or set dice_weight: 0)",
                         config.data.manifest or config.data.subjects)


def _step_of(row: Dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


def _write_config(path: Path, config: TrainConfig) -> None:
    import yaml

    write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), force=True)
