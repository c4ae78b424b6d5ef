"""Training pairs on the network grid (the pairs themselves come from
:mod:`regkit.io.manifests`: a manifest, or every ordered pair of a folder of subjects)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from regkit.errors import InputError
from regkit.image import Image
from regkit.intensity import center_of_mass, normalize_intensity
from regkit.io.images import load_image, load_label
from regkit.io.manifests import PairPaths
from regkit.nn.config import ModelConfig
from regkit.nn.grid import canonical_grid_affine, grid_world_points, onto_grid

log = logging.getLogger(__name__)


class PairDataset:
    """Pairs brought onto the network grid: ``sample(i, generator)`` gives tensors on the
    canonical grid, optionally augmented with ``augment``. Each image's box is centred on its
    intensity centre of mass, as at inference (:func:`regkit.nn.predict.prepare_pair`): the
    network learns what is left after the optimiser's ``center_of_mass`` start.

    Images are read once, intensity-normalised with the model's rule and kept in memory.

    Labels reach the loss as indices ``0..num_labels-1`` of ``label_values`` (0, background,
    always first): by default every value found in the label files, so FreeSurfer-style maps
    (2, 41, ..., 2035) need 45 one-hot channels, not 2036. ``num_labels`` instead means the
    values ``0..num_labels-1`` and a file holding a larger value is refused; a value not in an
    explicit ``label_values`` counts as background.
    """

    def __init__(self, pairs: List[PairPaths], model_config: ModelConfig, augment=None,
                 num_labels: Optional[int] = None, cache: bool = True, device: Union[str, torch.device] = "cpu",
                 label_values: Optional[Sequence[int]] = None):
        self.pairs = pairs
        self.config = model_config
        self.augment = augment
        self.cache = cache
        # Where pairs are resampled and augmented (and cached): the training device, so a GPU
        # run does not wait for the CPU (benchmarks/README.md, "Measurements behind design
        # choices"). Random numbers are drawn on the CPU either way.
        self.device = torch.device(device)
        self._images: Dict[Tuple[Path, bool], Image] = {}
        self._centres: Dict[Path, Tensor] = {}
        self.grid_affine = canonical_grid_affine(model_config.grid_shape, model_config.grid_spacing_mm)
        self.has_labels = all(p.has_labels for p in pairs)
        self._label_limit = num_labels  # an explicit 0..num_labels-1: larger values are refused
        if label_values is None and num_labels:
            label_values = range(num_labels)
        if label_values is None and self.has_labels:
            label_values = self._find_label_values()
        self.label_values: Optional[List[int]] = sorted({0, *map(int, label_values)}) if label_values is not None else None
        self.num_labels = len(self.label_values) if self.label_values is not None else None
        contiguous = self.label_values is None or self.label_values == list(range(len(self.label_values)))
        self._lookup = None if contiguous else torch.tensor(self.label_values, dtype=torch.float32, device=self.device)

    def __len__(self) -> int:
        return len(self.pairs)

    def _find_label_values(self) -> List[int]:
        from regkit.checks import MAX_LABEL_VALUES, check_label_count

        files = {f for p in self.pairs for f in (p.moving_labels, p.fixed_labels)}
        found = set()
        for f in files:  # each value is a one-hot channel: bounded per file and in all
            image = self._load(f, True)
            check_label_count(image, f)
            found.update(int(v) for v in torch.unique(image.data).tolist())
            if len(found) > MAX_LABEL_VALUES:
                raise InputError(f"the label maps hold more than {MAX_LABEL_VALUES} distinct values together "
                                 "(each is a Dice channel); list the ones to learn in data.label_values", f)
        values = sorted(found | {0})
        if values != list(range(len(values))):
            shown = ", ".join(map(str, values[:8])) + (f", ..., {values[-1]}" if len(values) > 8 else "")
            log.info("labels: %d values (%s) used as Dice channels 0..%d", len(values), shown, len(values) - 1)
        return values

    def label_indices(self, labels: Tensor) -> Tensor:
        """Label values → channel indices ``0..num_labels-1`` (values not in ``label_values``: 0)."""
        labels = labels.round().long()
        if self._lookup is None:
            return labels
        index = torch.searchsorted(self._lookup, labels.float()).clamp_max(len(self.label_values) - 1)
        return torch.where(self._lookup[index] == labels, index, torch.zeros_like(index))

    def _load(self, path: Path, is_label: bool) -> Image:
        key = (path, is_label)
        if key in self._images:
            return self._images[key]
        if is_label:
            image = load_label(path)
            if self._label_limit and float(image.data.max()) >= self._label_limit:
                raise InputError(f"holds label value {int(image.data.max())}, but data.num_labels is {self._label_limit} "
                                 f"(values 0..{self._label_limit - 1}); leave num_labels out to use every value found, "
                                 "or list the ones to use in data.label_values", path)
        else:
            image = normalize_intensity(load_image(path), self.config.intensity)
            if image.channels != self.config.in_channels:
                raise InputError(f"has {image.channels} channel(s); the model takes {self.config.in_channels}", path)
        image = image.to(self.device)
        if self.cache:
            self._images[key] = image
        return image

    def check_readable(self) -> None:
        """Read the inputs now (all of them when cached, else the first pair), so a bad file is
        reported before a run writes anything."""
        for pair in self.pairs if self.cache else self.pairs[:1]:
            for path, is_label in ((pair.moving, False), (pair.fixed, False),
                                   (pair.moving_labels, True), (pair.fixed_labels, True)):
                if path is not None:
                    self._load(path, is_label)

    def _grid_points(self, centre: Tensor, generator) -> Tensor:
        """World points (mm) of the network grid placed on ``centre``, moved by a random spatial
        augmentation when augmentation is on: where an image of the pair is sampled."""
        from regkit.train.augment import random_spatial

        shape = self.config.grid_shape
        spatial = None
        if self.augment is not None and self.augment.enabled:
            spatial = random_spatial(self.augment, self.grid_affine, shape, generator).to(self.device)
        return grid_world_points(self.grid_affine, shape, centre, spatial, device=self.device)

    def _centre(self, path: Path, image: Image) -> Tensor:
        """World mm of ``image``'s intensity centre of mass (the normalised image's, as at inference)."""
        if path not in self._centres:
            self._centres[path] = center_of_mass(image.data.cpu()[None], image.affine.cpu())
        return self._centres[path]

    def sample(self, index: int, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Pair ``index`` on the grid: ``moving``/``fixed`` ``(C, X, Y, Z)`` float in [0, 1],
        and ``moving_labels``/``fixed_labels`` ``(1, X, Y, Z)`` int64 channel indices (see
        :meth:`label_indices`) when the pair has labels."""
        from regkit.train.augment import random_intensity

        pair = self.pairs[index]
        shape = self.config.grid_shape
        out: Dict[str, Tensor] = {}
        for role in ("moving", "fixed"):
            path = getattr(pair, role)
            image = self._load(path, False)
            centre = self._centre(path, image)
            points = self._grid_points(centre, generator)
            out[role] = onto_grid(image, self.grid_affine, shape, centre, points=points)
            if self.augment is not None and self.augment.enabled:
                out[role] = random_intensity(out[role], self.augment, generator)
            labels_path = getattr(pair, f"{role}_labels")
            if self.has_labels and labels_path is not None:
                labels = self._load(labels_path, True)
                out[f"{role}_labels"] = self.label_indices(onto_grid(labels, self.grid_affine, shape, centre, mode="nearest", points=points))
        return out


def collate(samples: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
