"""regkit's own transform files (``*.regkit.safetensors``) and the suffix dispatch."""
from __future__ import annotations

import json

import pytest
import torch

from regkit import space
from regkit.errors import InputError, OutputExistsError
from regkit.io.transform_files import read_transform, write_transform
from regkit.transforms import AffineTransform, Compose, DisplacementField, VelocityField


def _grid_affine() -> torch.Tensor:
    a = torch.tensor([[0.0, -1.5, 0.0, 10.0], [2.0, 0.0, 0.0, -4.0], [0.0, 0.0, 1.25, 7.5], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    return a


def _affine() -> AffineTransform:
    g = torch.Generator().manual_seed(1)
    m = torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    return AffineTransform(m, torch.randn(3, generator=g, dtype=torch.float64), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))


def _field(dtype=torch.float32) -> DisplacementField:
    g = torch.Generator().manual_seed(2)
    return DisplacementField(torch.randn(1, 3, 4, 5, 6, generator=g).to(dtype), _grid_affine())


def _velocity() -> VelocityField:
    g = torch.Generator().manual_seed(3)
    return VelocityField(0.5 * torch.randn(1, 3, 4, 5, 6, generator=g, dtype=torch.float64), _grid_affine(), steps=4)


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("make", [_affine, _field, lambda: _field(torch.float64), _velocity,
                                  lambda: Compose(_field(), _affine(), _velocity())], ids=["affine", "field32", "field64", "velocity", "chain"])
def test_native_round_trip_is_exact(tmp_path, make):
    t = make()
    path = write_transform(t, tmp_path / "t.regkit.safetensors")
    r = read_transform(path)
    assert type(r) is type(t)
    _same_tensors(t, r)
    if isinstance(t, Compose):
        assert [type(x) for x in r.transforms] == [type(x) for x in t.transforms]
        assert r.transforms[2].steps == 4
    x = torch.randn(20, 3, dtype=torch.float64) * 4
    assert torch.equal(r(x), t(x))


def test_native_metadata_is_json_without_pickle(tmp_path):
    from safetensors import safe_open

    path = write_transform(Compose(_affine(), _field()), tmp_path / "c.regkit.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "regkit-transform" and meta["version"] == "1"
    chain = json.loads(meta["chain"])
    assert [s["type"] for s in chain] == ["affine", "displacement"]
    assert torch.equal(torch.tensor(chain[1]["grid_affine"], dtype=torch.float64), _grid_affine())
    assert b"pickle" not in path.read_bytes()[:2000] and not path.read_bytes().startswith(b"PK")


def test_native_file_is_the_same_bytes_every_time(tmp_path):
    """The safetensors writer orders the metadata by a hash map (a new order per call); regkit
    sorts the header so --seed S gives the same bytes every run, and the file still reads."""
    t = Compose(_velocity(), _affine())
    files = [write_transform(t, tmp_path / f"t{i}.regkit.safetensors").read_bytes() for i in range(5)]
    assert all(f == files[0] for f in files[1:])
    header_size = int.from_bytes(files[0][:8], "little")
    assert header_size % 8 == 0 and list(json.loads(files[0][8:8 + header_size])) == sorted(json.loads(files[0][8:8 + header_size]))
    _same_tensors(t, read_transform(tmp_path / "t4.regkit.safetensors"))


def test_no_overwrite_without_force(tmp_path):
    path = write_transform(_affine(), tmp_path / "a.regkit.safetensors")
    with pytest.raises(OutputExistsError):
        write_transform(_affine(), path)
    write_transform(_velocity(), path, force=True)
    assert isinstance(read_transform(path), VelocityField)


def test_bad_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_transform(tmp_path / "missing.regkit.safetensors")
    with pytest.raises(InputError, match="is not a transform file type regkit knows"):
        read_transform(tmp_path / "x.png")
    bad = tmp_path / "bad.regkit.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="bad.regkit.safetensors"):
        read_transform(bad)
    with pytest.raises(InputError, match="holds one affine transform and this one is not affine"):
        write_transform(Compose(_affine(), _field()), tmp_path / "x.mat")
    with pytest.raises(InputError, match="reference grid"):
        write_transform(_affine(), tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.mat").exists() and not (tmp_path / "x.nii.gz").exists()


def test_chain_of_affines_written_as_one_itk_affine(tmp_path):
    a, b = _affine(), AffineTransform.from_homogeneous(torch.tensor(
        [[0.0, 1.0, 0.0, 5.0], [-1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 2.0, -3.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64))
    chain = Compose(a, b)
    r = read_transform(write_transform(chain, tmp_path / "ab.mat"))
    x = torch.randn(30, 3, dtype=torch.float64) * 20
    assert torch.allclose(r(x), chain(x), atol=1e-9)


def test_any_transform_written_as_field_on_reference(tmp_path):
    ref = (_grid_affine(), (4, 5, 6))
    a = _affine()
    r = read_transform(write_transform(a, tmp_path / "a_warp.nii.gz", reference=ref))
    assert isinstance(r, DisplacementField) and r.shape == (4, 5, 6)
    assert torch.allclose(r.affine, _grid_affine(), atol=1e-5)
    x = space.world_grid(_grid_affine(), (4, 5, 6), dtype=torch.float64)
    assert torch.allclose(r(x), a(x), atol=1e-4)  # float32 storage


def test_velocity_written_as_field_on_its_own_grid(tmp_path):
    v = _velocity()
    r = read_transform(write_transform(v, tmp_path / "v_warp.nii.gz"))
    assert isinstance(r, DisplacementField) and r.shape == v.shape
    x = space.world_grid(_grid_affine(), (4, 5, 6), dtype=torch.float64)
    assert torch.allclose(r(x), v(x), atol=1e-4)


def test_newer_format_version_is_refused(tmp_path):
    from safetensors.torch import save_file

    chain = json.dumps([{"type": "affine"}])
    tensors = {"0.matrix": torch.eye(3), "0.translation": torch.zeros(3), "0.center": torch.zeros(3)}
    save_file(tensors, str(tmp_path / "v2.regkit.safetensors"), metadata={"format": "regkit-transform", "version": "2", "chain": chain})
    with pytest.raises(InputError, match="newer regkit"):
        read_transform(tmp_path / "v2.regkit.safetensors")
    save_file(tensors, str(tmp_path / "v1.regkit.safetensors"), metadata={"format": "regkit-transform", "version": "1", "chain": chain})
    assert torch.equal(read_transform(tmp_path / "v1.regkit.safetensors").matrix, torch.eye(3))
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(InputError, match="not a regkit transform"):
        read_transform(tmp_path / "other.safetensors")
