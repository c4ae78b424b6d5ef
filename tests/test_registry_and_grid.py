"""The similarity registry (one list of metric names) and the Grid value (affine + shape)."""
from __future__ import annotations

import pytest
import torch

from regkit.similarities import METRIC_NAMES, METRICS, similarity_metric


def test_every_metric_names_a_loss_with_the_options_the_optimiser_feeds():
    from regkit.losses import similarity as sim
    from regkit.optimize.config import RegistrationConfig

    assert METRIC_NAMES == ("lncc", "mse", "mi", "mind")
    settings = RegistrationConfig().model_dump()
    for name, metric in METRICS.items():
        options = sim.similarity_options(name)
        for setting, option in metric.optimizer_settings.items():
            assert setting in settings and option in options, (name, setting, option)
        assert metric.step_bytes_per_voxel(32) >= metric.working_bytes_per_voxel > 0


def test_configs_cli_and_memory_read_the_registry():
    from regkit import resources
    from regkit.optimize.config import RegistrationConfig, load_config

    assert set(RegistrationConfig().metric_weights) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert load_config("default", metric=name).metric == name
        assert resources.working_bytes_per_voxel(name) == METRICS[name].step_bytes_per_voxel()
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity_metric("ssd")
    assert similarity_metric("MI").function == "mutual_information"


def test_get_similarity_takes_the_mask_by_keyword():
    from regkit.losses.similarity import get_similarity, lncc

    f, w = torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12, 12)
    mask = (torch.rand(1, 1, 12, 12, 12) > 0.5).float()
    assert torch.equal(get_similarity("lncc", window=3)(f, w, mask), lncc(f, w, window=3, mask=mask))
    with pytest.raises(ValueError, match="not options of lncc"):
        get_similarity("lncc", bins=3)


def test_grid_is_carried_by_images_fields_and_results():
    from regkit.grid import Grid
    from regkit.image import Image
    from regkit.transforms import DisplacementField, VelocityField

    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    image = Image(torch.zeros(1, 4, 5, 6), affine)
    grid = image.grid
    a, shape = grid  # the (affine, shape) pair functions take
    assert isinstance(grid, Grid) and shape == (4, 5, 6) and torch.equal(a, affine)
    assert grid.voxels == 120 and torch.allclose(grid.spacing, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
    assert grid.world().shape == (4, 5, 6, 3)
    field = DisplacementField(torch.zeros(3, 4, 5, 6), affine)
    assert field.grid.same_as(grid) and VelocityField(torch.zeros(3, 4, 5, 6), affine).grid.same_as(grid)
    assert Grid.of(affine.numpy(), (1, 4, 5, 6)).same_as(grid)
    assert not Grid.of(affine, (4, 5, 7)).same_as(grid)
