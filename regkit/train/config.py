"""Training configuration (YAML → pydantic, unknown keys are errors).

Relative paths in ``data`` are relative to the YAML file's folder; paths inside a manifest are
relative to the manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import Field, ValidationError, model_validator

from regkit.config import StrictModel, yaml_settings
from regkit.errors import InputError, describe_validation_error
from regkit.io import validate
from regkit.nn.config import ModelConfig


class DataConfig(StrictModel):
    """Where pairs come from: a manifest (CSV/JSON of moving, fixed[, moving_labels,
    fixed_labels]) OR a folder of subjects (``*.nii.gz`` images, labels beside them as
    ``<name><label_suffix>.nii.gz``) from which random ordered pairs are drawn."""

    manifest: Optional[Path] = None
    subjects: Optional[Path] = None
    labelmaps: Optional[Path] = Field(None, description="a folder of label maps only: images are synthesised from them "
                                      "on the fly (the synth section; regkit.train.synth)")
    label_suffix: str = "_labels"
    val_manifest: Optional[Path] = None
    num_labels: Optional[int] = Field(None, ge=2, description="label values 0..num_labels-1 (a larger value is refused); "
                                      "default: every value found in the label files")
    label_values: Optional[List[int]] = Field(None, min_length=1, description="the label values the Dice terms use, e.g. "
                                              "FreeSurfer's [2, 41, 17, 53]; others count as background")
    cache: bool = True
    prepare_on: Literal["device", "cpu"] = Field(
        "device", description="where cached images live and pairs are resampled/augmented: the training device "
        "(fast on a GPU) or the CPU (when the cohort does not fit in GPU memory)")

    def with_source(self, path: Path) -> "DataConfig":
        """This config reading ``path`` instead (absolute): as its label-map or subjects folder,
        or as its manifest, whichever source it names."""
        name = next(n for n in ("labelmaps", "subjects", "manifest") if getattr(self, n) is not None)
        return self.model_copy(update={name: Path(path).absolute()})

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if sum(v is not None for v in (self.manifest, self.subjects, self.labelmaps)) != 1:
            raise ValueError("give exactly one of data.manifest, data.subjects and data.labelmaps")
        if self.num_labels is not None and self.label_values is not None:
            raise ValueError("give at most one of data.num_labels and data.label_values")
        return self


class LossConfig(StrictModel):
    """loss = similarity + reg_weight · regularisation(fields) + dice_weight · soft Dice(labels)
    + affine_l2_weight · ‖affine − identity‖²
    + affine_stage_weight · (similarity + dice_weight · soft Dice) of the affine stage alone.

    The last term is deep supervision of the localisation net: trained only through the whole
    cascade's result, the affine is left loose because the dense stages make up for it, so both
    the cascade and ``--refine`` start farther away (benchmarks/README.md, "Measurements behind design choices").
    """

    similarity: str = "lncc"
    similarity_options: Dict[str, Any] = Field(default_factory=dict)
    similarity_weight: float = Field(1.0, ge=0, description="0: Dice and regularisation only (images of random, "
                                     "different contrasts, where no similarity holds)")
    regularization: str = "diffusion"
    reg_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(0.0, ge=0)
    dice_stride: int = Field(2, ge=1, description="score Dice on every n-th grid voxel per axis (the one-hot warp is the costliest op on CPU)")
    affine_l2_weight: float = Field(0.0, ge=0)
    affine_stage_weight: float = Field(0.0, ge=0, description="weight of the affine stage's own similarity + Dice")
    affine_stage_stride: int = Field(4, ge=1, description="score the affine stage on every n-th grid voxel per axis (12 parameters need few)")

    @model_validator(mode="after")
    def _known_similarity(self) -> "LossConfig":
        """An unknown similarity or option failed at the first training step, as an internal error."""
        from regkit.losses.similarity import check_similarity_options

        check_similarity_options(self.similarity, self.similarity_options)
        return self


class AugmentConfig(StrictModel):
    """Random augmentation, drawn independently for the moving and the fixed image of a pair."""

    enabled: bool = True
    rotation_deg: float = Field(5.0, ge=0)
    scale: float = Field(0.05, ge=0, lt=0.5)
    translation_mm: float = Field(5.0, ge=0)
    elastic_mm: float = Field(2.0, ge=0, description="std of control-point displacements")
    elastic_spacing_mm: float = Field(32.0, gt=0)
    gamma: Tuple[float, float] = (0.8, 1.25)
    bias: float = Field(0.1, ge=0, description="max log-amplitude of a smooth multiplicative bias")
    noise_std: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _gamma_range(self) -> "AugmentConfig":
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ValueError(f"gamma must be (low, high) with 0 < low <= high, got {list(self.gamma)}")
        return self


class SynthConfig(StrictModel):
    """Images synthesised from label maps (``data.labelmaps``; :mod:`regkit.train.synth`); gamma,
    bias and noise come from ``augment``."""

    brain_labels: Tuple[int, int] = Field((1, 99), description="label values in [low, high] are brain (FreeSurfer: 1..99)")
    skull_strip: float = Field(1.0, ge=0, le=1, description="probability that an image shows the brain labels only (else the whole head)")
    same_contrast: float = Field(0.3, ge=0, le=1, description="probability that the fixed image reuses the moving one's intensities")
    texture_std: float = Field(0.1, ge=0, description="largest per-label texture std (intensities in [0, 1])")
    blur_voxels: Tuple[float, float] = Field((0.3, 1.0), description="partial-volume blur sigma range, network grid voxels")
    tie_labels: Dict[int, int] = Field(default_factory=dict, description="label -> label whose intensity it shares (e.g. right -> left)")

    @model_validator(mode="after")
    def _ranges(self) -> "SynthConfig":
        if self.brain_labels[0] > self.brain_labels[1] or not 0 <= self.blur_voxels[0] <= self.blur_voxels[1]:
            raise ValueError("brain_labels and blur_voxels must be (low, high) with low <= high")
        return self


class OptimConfig(StrictModel):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    affine_lr_factor: float = Field(0.1, gt=0, description="the localisation net learns at lr × this (lower, as STNs need)")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(10.0, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="cosine: lr falls from lr to lr × final_lr_factor over the run")
    final_lr_factor: float = Field(0.05, gt=0, le=1)


class TrainConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val_every: int = Field(100, ge=1)
    val_pairs: Optional[int] = Field(None, ge=1, description="validate on the first N pairs only")
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    out_dir: Path = Path("runs/cascade")


def resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    """Make the data paths absolute, relative to ``base`` (the config file's folder)."""
    data = config.data.model_copy()
    for name in ("manifest", "subjects", "labelmaps", "val_manifest"):
        value = getattr(data, name)
        if value is not None and not Path(value).is_absolute():
            setattr(data, name, (base / value).resolve())
    return config.model_copy(update={"data": data})


def load_train_config(path: Union[str, Path]) -> TrainConfig:
    """Read and validate a training YAML; any problem is one :class:`InputError` line."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such config file", p)
    raw = yaml_settings(validate.read_text(p, "training config"), p, "the training config")
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as e:
        where, what = describe_validation_error(e)
        raise InputError(f"invalid training config at {where}: {what} ({e.error_count()} problem(s))", p) from e
    return resolve_paths(config, p.parent)
