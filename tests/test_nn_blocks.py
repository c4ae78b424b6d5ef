"""regkit's plain-torch U-Net and convolution blocks against MONAI's: same parameter names, same
outputs for the same weights (so checkpoints trained with either load into the other)."""
import pytest
import torch

from regkit.nn.blocks import ConvBlock, UNet

monai_nets = pytest.importorskip("monai.networks.nets")
monai_blocks = pytest.importorskip("monai.networks.blocks")

ACT = ("leakyrelu", {"negative_slope": 0.2})


@pytest.mark.parametrize("channels", [[8, 16], [8, 16, 16], [4, 8, 8, 16]])
def test_unet_matches_monai(channels):
    torch.manual_seed(0)
    strides = [2] * (len(channels) - 1)
    theirs = monai_nets.UNet(3, 2, 5, channels=channels, strides=strides, act=ACT, norm="instance")
    ours = UNet(2, 5, channels, strides)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 2, 16, 24, 8)
    for mode in (True, False):
        theirs.train(mode), ours.train(mode)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_conv_block_matches_monai():
    torch.manual_seed(1)
    theirs = monai_blocks.Convolution(3, 3, 6, strides=2, kernel_size=3, act=ACT, norm="instance")
    ours = ConvBlock(3, 6, stride=2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 10, 12, 14)
    torch.testing.assert_close(ours(x), theirs(x))


def test_inference_does_not_import_monai(tmp_path):
    """A prediction from a saved cascade must not pay MONAI's import (seconds per process)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from regkit.nn.cascade import CascadeNet\n"
        "from regkit.nn.config import ModelConfig\n"
        "net = CascadeNet(ModelConfig(grid_shape=(32, 32, 32), affine={'head': 'keypoints', 'channels': [4, 8, 8]}, stages=[{'scale': 2, 'channels': [4, 8]}]))\n"
        "net.eval()(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32), full_resolution=False)\n"
        "print('monai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
