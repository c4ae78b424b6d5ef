"""Training pairs synthesised on the fly from label maps alone (any contrast), on the training device.

A label map (e.g. FreeSurfer's aseg of a whole head) is all a subject needs. Each step draws two
DIFFERENT subjects (inter-subject pairs: what registration has to undo) and, for each, SynthSeg /
SynthMorph style (Billot et al. 2023; Hoffmann et al. 2022):

1. a random spatial transform (affine + smooth elastic, :mod:`regkit.train.augment`) of the
   network grid's points, which then sample the label map (nearest) in physical space, the box on
   the map's brain centre of mass (as inference puts it on the image's intensity centre of mass);
2. an image from those labels: a random mean intensity per label (uniform in [0, 1], so any
   contrast, T1-like, T2-like or none seen in practice; ``synth.tie_labels`` gives left and right
   structures one draw), a random per-label texture (Gaussian noise of random std), only brain
   labels kept with probability ``synth.skull_strip`` (else the whole head), a partial-volume
   blur of random width;
3. gamma, a smooth bias field and noise (:func:`regkit.train.augment.random_intensity`, the
   ``augment`` section), then the model's percentile normalisation, as at inference.

With probability ``synth.same_contrast`` the fixed image reuses the moving image's intensities
(jittered), so same-contrast pairs are common as well. The Dice labels are the label values of
``data.label_values`` (others count as background), mapped to channel indices as for image pairs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from regkit.errors import InputError
from regkit.image import Image
from regkit.intensity import center_of_mass, percentile_normalise
from regkit.io.manifests import IMAGE_SUFFIXES, PairPaths
from regkit.nn.grid import onto_grid
from regkit.train.augment import _uniform, random_intensity
from regkit.train.data import PairDataset


def labelmaps_in_folder(folder: Path) -> List[Path]:
    """The label maps (``*.nii.gz``, ``*.nii``, ``*.mgz``, ...) in ``folder``, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError("no such label-map folder", d)
    files = sorted(f for f in d.iterdir() if f.is_file() and f.name.endswith(IMAGE_SUFFIXES))
    if len(files) < 2:
        raise InputError(f"needs at least 2 label maps (two different subjects per pair), found {len(files)}", d)
    return files


def random_contrast(num_classes: int, max_std: float, generator=None) -> Tuple[Tensor, Tensor]:
    """Per-class mean in [0, 1] and texture std in [0, ``max_std``] (class 0, background: 0, 0)."""
    means = _uniform(generator, 0, 1, num_classes).float()
    stds = _uniform(generator, 0, max_std, num_classes).float()
    means[0], stds[0] = 0.0, 0.0
    return means, stds


def synthesize(classes: Tensor, keep: Tensor, means: Tensor, stds: Tensor, blur_voxels: float, augment, generator=None) -> Tensor:
    """An image ``(1, X, Y, Z)`` in [0, 1] from a map of synthesis classes ``(1, X, Y, Z)``
    (int64): class means + texture, zero where ``keep`` is false, blurred by ``blur_voxels``
    (partial volume), then gamma, bias and noise (``augment``) inside the blurred foreground."""
    from regkit.pyramid import gaussian_smooth

    device = classes.device
    noise = torch.randn(classes.shape, generator=generator).to(device)
    image = (means.to(device)[classes] + stds.to(device)[classes] * noise).clamp(min=0) * keep
    image = gaussian_smooth(image[None], [blur_voxels] * 3)[0]
    foreground = F.max_pool3d(keep[None].float(), 3, stride=1, padding=1)[0] > 0  # the blur's reach, about
    image = image / image.amax().clamp(min=1e-6)
    if augment is not None and augment.enabled:
        image = random_intensity(image, augment, generator)
    return image * foreground


class LabelMapDataset(PairDataset):
    """Ordered pairs of different subjects' label maps; :meth:`sample` synthesises both images.

    ``sample(i, generator)`` returns what :meth:`PairDataset.sample` does (``moving``, ``fixed``
    in [0, 1] and their Dice label indices on the network grid). Without a generator (validation)
    pair ``i`` is drawn from a generator seeded with ``seed + i``: the same images every time.
    """

    def __init__(self, maps: List[Path], model_config, augment, synth, label_values: Optional[Sequence[int]] = None,
                 device="cpu", pairs: Optional[List[Tuple[int, int]]] = None, seed: int = 0):
        self.maps = list(maps)
        self.synth = synth
        self.seed = seed
        index_pairs = pairs if pairs is not None else [(i, j) for i in range(len(self.maps)) for j in range(len(self.maps)) if i != j]
        self.index_pairs = index_pairs
        paths = [PairPaths(self.maps[i], self.maps[j], self.maps[i], self.maps[j]) for i, j in index_pairs]
        super().__init__(paths, model_config, augment, None, cache=True, device=device, label_values=label_values)
        self._values: Optional[Tensor] = None  # sorted label values of every map (see _build_classes)

    def subset(self, pairs: List[Tuple[int, int]], seed: int) -> "LabelMapDataset":
        """These maps' pairs ``pairs`` (e.g. fixed validation pairs drawn from ``seed``), sharing
        the maps already read (no second copy in memory)."""
        other = LabelMapDataset(self.maps, self.config, self.augment, self.synth, self.label_values, self.device, pairs, seed)
        other._images, other._centres = self._images, self._centres
        return other

    def check_readable(self) -> None:
        """Read every label map now (a bad file is one line before the run writes anything)."""
        for path in self.maps:
            self._load(path, True)
        self._build_classes()

    def _build_classes(self) -> None:
        """Every label value found (sorted), its synthesis class (``tie_labels`` share one) and
        whether it is brain (``brain_labels`` range)."""
        values = sorted({int(v) for path in self.maps for v in torch.unique(self._load(path, True).data).tolist()} | {0})
        ties = {int(k): int(v) for k, v in self.synth.tie_labels.items()}
        position = {v: i for i, v in enumerate(values)}
        self._values = torch.tensor(values, dtype=torch.float32, device=self.device)
        self._class_of = torch.tensor([position.get(ties.get(v, v), position[v]) for v in values], device=self.device)
        low, high = self.synth.brain_labels
        self._is_brain = torch.tensor([low <= v <= high for v in values], device=self.device)

    def _brain_centre(self, path: Path, labels: Image) -> Tensor:
        """World mm of the centre of mass of the map's brain labels (the box centre)."""
        if path not in self._centres:
            low, high = self.synth.brain_labels
            brain = ((labels.data >= low) & (labels.data <= high)).float()
            self._centres[path] = center_of_mass(brain.cpu()[None], labels.affine.cpu())
        return self._centres[path]

    def sample(self, index: int, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        if self._values is None:
            self._build_classes()
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed + index)
        pair = self.pairs[index]
        shape = self.config.grid_shape
        num_classes = len(self._values)
        means, stds = random_contrast(num_classes, self.synth.texture_std, generator)
        same = float(torch.rand(1, generator=generator)) < self.synth.same_contrast
        out: Dict[str, Tensor] = {}
        for role in ("moving", "fixed"):
            path = getattr(pair, role)
            labels = self._load(path, True)
            centre = self._brain_centre(path, labels)
            points = self._grid_points(centre, generator)
            raw = onto_grid(labels, self.grid_affine, shape, centre, mode="nearest", points=points)
            index_of_value = torch.searchsorted(self._values, raw.round()).clamp_max(num_classes - 1)
            classes = self._class_of[index_of_value]
            strip = float(torch.rand(1, generator=generator)) < self.synth.skull_strip
            keep = self._is_brain[index_of_value] if strip else index_of_value > 0
            if role == "fixed" and not same:
                means, stds = random_contrast(num_classes, self.synth.texture_std, generator)
            elif role == "fixed":
                means = (means * (1 + 0.1 * _uniform(generator, -1, 1, num_classes).float())).clamp(0, 1)
            low, high = self.synth.blur_voxels
            blur = float(_uniform(generator, low, high, 1))
            image = synthesize(classes, keep, means, stds, blur, self.augment, generator)
            out[role] = percentile_normalise(image, self.config.intensity.percentiles)
            out[f"{role}_labels"] = self.label_indices(raw)
        return out


def validation_pairs(count: int, subjects: int) -> List[Tuple[int, int]]:
    """``count`` ordered pairs of different subjects spread over all of them (fixed, for validation)."""
    pairs = [(i, j) for i in range(subjects) for j in range(subjects) if i != j]
    step = max(1, len(pairs) // count)
    chosen = pairs[::step][:count]
    return chosen if len(chosen) == count else pairs[:count]

