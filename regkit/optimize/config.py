"""Settings of ``regkit.register``: a pydantic schema and YAML presets (``configs/*.yaml``).

Every length is in millimetres in world space; iteration counts are per pyramid level. Unknown or
mistyped keys are refused (``extra="forbid"``) with a one-line :class:`InputError` naming the key.
Presets are found by name through ``importlib.resources`` (``configs/`` is installed as the package
``regkit.configs``); a path to a ``.yaml`` file works too.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from pydantic import Field, ValidationError

from regkit.config import StrictModel, yaml_settings
from regkit.errors import InputError, describe_validation_error
from regkit.similarities import METRIC_NAMES, Metric



#: bounds that keep a config's numbers from overflowing grid sizes or asking for endless work
MAX_MM = 1e5
MAX_ITERATIONS = 100_000


class AffineLevel(StrictModel):
    spacing_mm: float = Field(gt=0, le=MAX_MM, description="isotropic voxel size of this level's working grid")
    iterations: int = Field(ge=0, le=MAX_ITERATIONS)


class AffineStage(StrictModel):
    enabled: bool = True
    init: Literal["center_of_mass", "geometric_center", "none"] = "center_of_mass"
    rigid: bool = Field(False, description="rotation + translation only (6 degrees of freedom), e.g. the same subject")
    levels: List[AffineLevel] = [AffineLevel(spacing_mm=6, iterations=80), AffineLevel(spacing_mm=4, iterations=40)]
    lr_translation_mm: float = Field(1.0, gt=0, description="Adam step for the translation (mm)")
    lr_matrix: float = Field(0.01, gt=0, description="Adam step for the 3x3 matrix entries")
    lncc_window: int = Field(9, ge=3, description="LNCC window (voxels) during the affine stage")
    rotation_search_deg: List[float] = Field(default_factory=list, description=(
        "try starting rotations of +/- each of these angles (degrees) about each axis, briefly refined on the "
        "first level, and start from the best (e.g. [15, 30]: 13 starts; empty: the centre-of-mass start alone)"))


class DeformableLevel(StrictModel):
    spacing_mm: float = Field(gt=0, le=MAX_MM, description="voxel size of the level's working grid (>= the fixed image's)")
    control_spacing_mm: float = Field(gt=0, le=MAX_MM, description="spacing of the velocity/displacement control grid")
    iterations: int = Field(ge=0, le=MAX_ITERATIONS)


class DeformableStage(StrictModel):
    enabled: bool = True
    model: Literal["svf", "displacement"] = "svf"
    levels: List[DeformableLevel] = [
        DeformableLevel(spacing_mm=4, control_spacing_mm=8, iterations=60),
        DeformableLevel(spacing_mm=2, control_spacing_mm=4, iterations=30),
    ]
    squaring_steps: int = Field(5, ge=0, le=12)
    lr_mm: float = Field(0.5, gt=0, description="Adam step for the velocity/displacement (mm)")
    warmup_iterations: int = Field(3, ge=0, description=(
        "a level that starts from a field (the previous level's, or a cascade's prediction) ramps its "
        "Adam step up over this many iterations (at most a third of the level's) instead of moving every "
        "control point by lr_mm at once"))
    regularizer: Literal["diffusion", "bending"] = "diffusion"
    regularization_weight: float = Field(1.0, ge=0)
    folding_weight: float = Field(0.0, ge=0, description="weight of the det J <= 0 penalty (0: off)")


class RegistrationConfig(StrictModel):
    metric: Metric = "lncc"
    lncc_window: int = Field(5, ge=3, description="LNCC window (voxels) in the deformable stage")
    mi_bins: int = Field(32, ge=4)
    metric_weights: Dict[Metric, float] = Field(
        default_factory=lambda: {name: 1.0 for name in METRIC_NAMES},
        description="similarity multiplier per metric, so one regularisation weight suits all")
    crop_margin_mm: Optional[float] = Field(12.0, ge=0, le=MAX_MM, description="crop the working grid to the fixed foreground + margin (null: no crop)")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (null: the cores this process may use, at most 8; see regkit.devices.cpu_threads)")
    early_stop_window: int = Field(10, ge=2, description="iterations compared for the plateau test")
    early_stop_tolerance: float = Field(1e-4, ge=0, description="stop a level when the loss improves less than this per iteration")
    affine: AffineStage = AffineStage()
    deformable: DeformableStage = DeformableStage()


PRESETS_PACKAGE = "regkit.configs"


def preset_names() -> List[str]:
    """Names of the presets shipped in ``regkit.configs`` (``train_*`` files excluded)."""
    files = resources.files(PRESETS_PACKAGE).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml") and not f.name.startswith("train_"))


def load_config(config: Union[None, str, Path, Dict[str, Any], RegistrationConfig] = None,
                sets: Sequence[str] = (), **overrides: Any) -> RegistrationConfig:
    """A validated :class:`RegistrationConfig` from a preset name, a YAML path, a dict or a config.

    A YAML file holds only the keys it changes: they are layered on the preset its ``base:`` key
    names (default: ``default``; ``base: null`` for RegistrationConfig's built-in values).
    ``sets``: ``"a.b=value"`` assignments (``regkit register --set``; a list item by its index,
    ``deformable.levels.1.iterations=10``; values read as YAML), applied in order after the file.
    ``overrides`` set top-level keys (e.g. ``metric="mi"``); ``None`` values are ignored.
    """
    origin = "config"
    if config is None:
        config = "default"
    if isinstance(config, RegistrationConfig):
        data = config.model_dump()
    elif isinstance(config, dict):
        data = dict(config)
    else:
        text, origin = _preset_or_file_text(str(config))
        data = _on_base(yaml_settings(text, origin), origin,
                        default_base=None if origin.startswith("preset ") else "default")
    if sets:
        import copy

        data = copy.deepcopy(data)  # a caller's dict is left as it was
    for assignment in sets:
        _set_key(data, assignment)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RegistrationConfig.model_validate(data)
    except ValidationError as e:
        key, msg = describe_validation_error(e)
        raise InputError(f"setting '{key}': {msg}", origin) from None


def _on_base(data: Dict[str, Any], origin: str, default_base: Optional[str]) -> Dict[str, Any]:
    """``data`` (a YAML file's settings) merged over the preset named by its ``base`` key
    (``default_base`` when absent; null: the built-in values): mappings key by key, anything else
    (lists included) replaced. The shipped presets say ``base: null``, so a copy of one given as a
    path registers exactly as the preset does."""
    data = dict(data)
    base = data.pop("base", default_base)
    if base is None:
        return data
    if not isinstance(base, str) or base not in preset_names():
        raise InputError(f"setting 'base': expected a preset name ({', '.join(preset_names())}) or null, got {base!r}", origin)
    text, preset = _preset_or_file_text(base)
    return _merged(_on_base(yaml_settings(text, preset), preset, default_base=None), data)


def _merged(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _set_key(data: Dict[str, Any], assignment: str) -> None:
    """Apply ``"a.b.c=value"`` (value read as YAML) to ``data`` in place; a missing mapping level
    is created and the schema judges the result. An index into a list must exist."""
    import yaml

    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise InputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. deformable.regularization_weight=2")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(f"--set {assignment!r}: '{'.'.join(parts[:i])}' has {len(node)} items; '{part}' is not one")
            part = int(part)
        elif not isinstance(node, dict):
            raise InputError(f"--set {assignment!r}: '{'.'.join(parts[:i])}' is a value, not a group of settings")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                default = RegistrationConfig().model_dump()
                for p in parts[:i + 1]:  # a group the file left out: start from its built-in values
                    default = default.get(p) if isinstance(default, dict) else None
                node[part] = default if isinstance(default, (dict, list)) else {}
            node = node[part]


def _preset_or_file_text(name: str):
    path = Path(name)
    if name.endswith((".yaml", ".yml")) or path.is_file():  # a folder named like a preset is not a config
        if not path.is_file():
            raise InputError("no such config file", path)
        from regkit.io.validate import read_text

        return read_text(path, "config file"), str(path)
    candidate = resources.files(PRESETS_PACKAGE).joinpath(f"{name}.yaml")
    if not candidate.is_file() or name.startswith("train_"):
        raise InputError(f"unknown preset '{name}' (presets: {', '.join(preset_names())}; or give a .yaml path)")
    return candidate.read_text(encoding="utf-8"), f"preset {name}"
