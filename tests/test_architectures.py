"""EDM's architectures as data: the arguments of NVlabs/edm train.py, the released checkpoints' sizes, and the
sizes that cannot build or run refused in one line."""
import pytest
import torch

from full.errors import ConfigError
from full.nets.architectures import EDM_ARCHITECTURES, EDM_RELEASED, architecture_kwargs, build_edm

# Parameter counts of the released EDM checkpoints (as loaded from NVIDIA's pickles, README "Supported teachers").
RELEASED_PARAMETERS = {
    "cifar10-32x32-uncond-vp": 55_733_891, "cifar10-32x32-cond-vp": 55_735_299,
    "cifar10-32x32-uncond-ve": 56_397_827, "cifar10-32x32-cond-ve": 56_400_643,
    "ffhq-64x64-uncond-vp": 61_805_571, "ffhq-64x64-uncond-ve": 62_761_091,
    "afhqv2-64x64-uncond-vp": 61_805_571, "afhqv2-64x64-uncond-ve": 62_761_091,
    "imagenet-64x64-cond-adm": 295_899_267,
}


@pytest.mark.parametrize("name", EDM_RELEASED)
def test_released_checkpoints_have_their_parameter_counts(name):
    arch, resolution, channels, label_dim, overrides = EDM_RELEASED[name]
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        net = build_edm(arch, resolution, channels, label_dim, **overrides)
    assert sum(p.numel() for p in net.parameters()) == RELEASED_PARAMETERS[name]
    assert net.precond_name == "EDMPrecond" and net.init_kwargs["img_resolution"] == resolution


def test_arguments_are_those_of_edm_train_py():
    ddpmpp, ncsnpp, adm = (EDM_ARCHITECTURES[k] for k in ("ddpmpp", "ncsnpp", "adm"))
    assert (ddpmpp["embedding_type"], ddpmpp["encoder_type"], ddpmpp["channel_mult_noise"], ddpmpp["resample_filter"]) \
        == ("positional", "standard", 1, [1, 1])
    assert (ncsnpp["embedding_type"], ncsnpp["encoder_type"], ncsnpp["channel_mult_noise"], ncsnpp["resample_filter"]) \
        == ("fourier", "residual", 2, [1, 3, 3, 1])
    assert ddpmpp["model_channels"] == ncsnpp["model_channels"] == 128 and ddpmpp["channel_mult"] == [2, 2, 2]
    assert adm == {"model_type": "DhariwalUNet", "model_channels": 192, "channel_mult": [1, 2, 3, 4]}
    kwargs = architecture_kwargs("ncsnpp", 16, 1, 0, model_channels=16, channel_mult=[1, 2])
    assert kwargs["model_channels"] == 16 and kwargs["embedding_type"] == "fourier" and kwargs["img_resolution"] == 16
    assert EDM_ARCHITECTURES["ncsnpp"]["model_channels"] == 128  # the table is not modified by overrides


def test_small_networks_run():
    torch.manual_seed(0)
    for arch in EDM_ARCHITECTURES:
        net = build_edm(arch, 8, 3, 2, model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])
        out = net(torch.randn(2, 3, 8, 8), torch.tensor(1.0), torch.eye(2))
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch, resolution, overrides, needle", [
    ("unet", 8, {}, "--arch 'unet' is not an EDM architecture"),
    ("ddpmpp", 12, {}, "resolution 12 is not a power of two"),
    ("ddpmpp", 8, {"channel_mult": [1, 2, 2, 2, 2]}, "has 5 levels, but a 8x8 image can be halved only 3 times"),
    ("ddpmpp", 8, {"channel_mult": []}, "at least one level"),
    ("ddpmpp", 8, {"attn_resolutions": [16]}, "--attn-resolutions 16 is not a level"),
    ("ddpmpp", 8, {"model_channels": 33, "channel_mult": [1]}, "33-channel layer"),
    ("adm", 8, {"model_channels": 2, "channel_mult": [1]}, "2-channel layer"),
    ("ddpmpp", 8, {"bogus": 1}, "takes no argument 'bogus'"),
])
def test_impossible_sizes_are_one_line(arch, resolution, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        build_edm(arch, resolution, 1, 0, **{"num_blocks": 1, **overrides})
