"""The image similarity metrics by name: the one list that configs, the CLI, memory estimates,
the optimiser and training read (no torch import: ``regkit --help`` reads it).

Each :class:`SimilarityMetric` names its loss in :mod:`regkit.losses.similarity` (whose signature
gives the typed options, e.g. LNCC's ``window``; see :func:`regkit.losses.similarity.get_similarity`),
which optimiser settings feed those options, and the peak memory one optimiser step needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Mapping, Tuple


@dataclass(frozen=True)
class SimilarityMetric:
    """One similarity metric.

    Attributes:
        name: what configs and ``--metric`` call it.
        function: the loss's name in :mod:`regkit.losses.similarity` (``f(fixed, warped, mask=None,
            **options)``, a scalar to minimise).
        summary: one line for help texts.
        optimizer_settings: :class:`~regkit.optimize.config.RegistrationConfig` setting → option
            of ``function`` (``lncc_window`` → ``window``).
        working_bytes_per_voxel: peak bytes per working-grid voxel of one optimiser step (forward +
            backward, CPU float32), plus ``working_bytes_per_bin`` times the ``bins`` option. lncc
            and mse measured (≈180–200 B/voxel at 96³–128³, ``benchmarks/memory_calibration.py``);
            mind and mi are upper bounds from their extra channels (MIND-SSC: 12 descriptor
            channels per image; MI: a Parzen weight per bin and voxel for each image).
    """

    name: str
    function: str
    summary: str
    optimizer_settings: Mapping[str, str] = field(default_factory=dict)
    working_bytes_per_voxel: int = 224
    working_bytes_per_bin: int = 0

    def step_bytes_per_voxel(self, bins: int = 32) -> int:
        """Peak bytes per working-grid voxel of one optimiser step with ``bins`` histogram bins (MI)."""
        return self.working_bytes_per_voxel + self.working_bytes_per_bin * int(bins)


METRICS: Dict[str, SimilarityMetric] = {m.name: m for m in (
    SimilarityMetric("lncc", "lncc", "local normalised cross-correlation (same contrast)", {"lncc_window": "window"}, 224),
    SimilarityMetric("mse", "mse", "mean squared difference (same contrast and scale)", {}, 224),
    SimilarityMetric("mi", "mutual_information", "mutual information (different contrasts, e.g. T1/T2, CT/MRI)",
                     {"mi_bins": "bins"}, 224, 16),
    SimilarityMetric("mind", "mind", "MIND-SSC self-similarity descriptors (different contrasts)", {}, 448),
)}

METRIC_NAMES: Tuple[str, ...] = tuple(METRICS)
"""``("lncc", "mse", "mi", "mind")``"""

Metric = Literal[METRIC_NAMES]  # type: ignore[valid-type] - the names above, for pydantic schemas


def similarity_metric(name: str) -> SimilarityMetric:
    """The metric called ``name`` (any case); ValueError naming the choices for an unknown one."""
    key = str(name).lower()
    if key not in METRICS:
        raise ValueError(f"unknown similarity {name!r}; choose one of {', '.join(METRIC_NAMES)}")
    return METRICS[key]
