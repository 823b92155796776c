"""EDM networks and preconditioners: state_dict layout, EDM's sizes, Table 1 coefficients, and
independent numerical checks of the layers (resampling, attention, embeddings, block formula)."""
import inspect
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from full.nets.edm import (ARCHITECTURES, Conv2d, DhariwalUNet, FourierEmbedding, GroupNorm, PositionalEmbedding,
                           SongUNet, UNetBlock)
from full.nets.precond import PRECONDITIONERS, EDMPrecond, VEPrecond, VPPrecond, iDDPMPrecond

# ---------------------------------------------------------------------------------------------------
# Expected state_dict (key, shape) lists, derived from the constructors of NVlabs/edm
# training/networks.py (SongUNet, DhariwalUNet).

def _norm(p, c):
    return [(f"{p}.weight", (c,)), (f"{p}.bias", (c,))]


def _conv(p, cin, cout, k, bias=True, taps=0):
    keys = [(f"{p}.weight", (cout, cin, k, k))] if k else []
    keys += [(f"{p}.bias", (cout,))] if k and bias else []
    return keys + ([(f"{p}.resample_filter", (1, 1, taps, taps))] if taps else [])


def _linear(p, fin, fout, bias=True):
    return [(f"{p}.weight", (fout, fin))] + ([(f"{p}.bias", (fout,))] if bias else [])


def _block(p, cin, cout, emb, taps=0, heads=0, adaptive=False, resample_proj=True):
    """UNetBlock children in order norm0, conv0, affine, norm1, conv1, skip, norm2, qkv, proj."""
    keys = _norm(f"{p}.norm0", cin) + _conv(f"{p}.conv0", cin, cout, 3, taps=taps)
    keys += _linear(f"{p}.affine", emb, cout * (2 if adaptive else 1)) + _norm(f"{p}.norm1", cout)
    keys += _conv(f"{p}.conv1", cout, cout, 3)
    if cin != cout or taps:
        keys += _conv(f"{p}.skip", cin, cout, 1 if resample_proj or cin != cout else 0, taps=taps)
    if heads:
        keys += _norm(f"{p}.norm2", cout) + _conv(f"{p}.qkv", cout, 3 * cout, 1) + _conv(f"{p}.proj", cout, cout, 1)
    return keys


def song_keys(res, cin, cout_img, label_dim=0, augment_dim=0, model_channels=128, channel_mult=(1, 2, 2, 2),
              channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), embedding_type="positional",
              channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=(1, 1),
              **_):
    mc, taps = model_channels, len(resample_filter)
    nc, emb = mc * channel_mult_noise, mc * channel_mult_emb
    blk = dict(emb=emb)
    keys = [("map_noise.freqs", (nc // 2,))] if embedding_type == "fourier" else []
    keys += _linear("map_label", label_dim, nc) if label_dim else []
    keys += _linear("map_augment", augment_dim, nc, bias=False) if augment_dim else []
    keys += _linear("map_layer0", nc, emb) + _linear("map_layer1", emb, emb)
    c, caux, skips = cin, cin, []
    for level, mult in enumerate(channel_mult):
        r = res >> level
        if level == 0:
            keys += _conv(f"enc.{r}x{r}_conv", c, mc, 3)
            c = mc
            skips.append(c)
        else:
            keys += _block(f"enc.{r}x{r}_down", c, c, taps=taps, **blk)
            skips.append(c)
            if encoder_type == "skip":
                keys += _conv(f"enc.{r}x{r}_aux_down", caux, caux, 0, taps=taps)
                keys += _conv(f"enc.{r}x{r}_aux_skip", caux, c, 1)
            if encoder_type == "residual":
                keys += _conv(f"enc.{r}x{r}_aux_residual", caux, c, 3, taps=taps)
                caux = c
        for i in range(num_blocks):
            keys += _block(f"enc.{r}x{r}_block{i}", c, mc * mult, heads=int(r in attn_resolutions), **blk)
            c = mc * mult
            skips.append(c)
    for level in reversed(range(len(channel_mult))):
        r, mult = res >> level, channel_mult[level]
        if level == len(channel_mult) - 1:
            keys += _block(f"dec.{r}x{r}_in0", c, c, heads=1, **blk) + _block(f"dec.{r}x{r}_in1", c, c, **blk)
        else:
            keys += _block(f"dec.{r}x{r}_up", c, c, taps=taps, **blk)
        for i in range(num_blocks + 1):
            heads = int(i == num_blocks and r in attn_resolutions)
            keys += _block(f"dec.{r}x{r}_block{i}", c + skips.pop(), mc * mult, heads=heads, **blk)
            c = mc * mult
        if decoder_type == "skip" or level == 0:
            if decoder_type == "skip" and level < len(channel_mult) - 1:
                keys += _conv(f"dec.{r}x{r}_aux_up", cout_img, cout_img, 0, taps=taps)
            keys += _norm(f"dec.{r}x{r}_aux_norm", c) + _conv(f"dec.{r}x{r}_aux_conv", c, cout_img, 3)
    return keys


def adm_keys(res, cin, cout_img, label_dim=0, augment_dim=0, model_channels=192, channel_mult=(1, 2, 3, 4),
             channel_mult_emb=4, num_blocks=3, attn_resolutions=(32, 16, 8), **_):
    mc = model_channels
    emb = mc * channel_mult_emb
    blk = dict(emb=emb, adaptive=True, resample_proj=False)
    keys = _linear("map_augment", augment_dim, mc, bias=False) if augment_dim else []
    keys += _linear("map_layer0", mc, emb) + _linear("map_layer1", emb, emb)
    keys += _linear("map_label", label_dim, emb, bias=False) if label_dim else []
    c, skips = cin, []
    for level, mult in enumerate(channel_mult):
        r = res >> level
        if level == 0:
            keys += _conv(f"enc.{r}x{r}_conv", c, mc * mult, 3)
            c = mc * mult
        else:
            keys += _block(f"enc.{r}x{r}_down", c, c, taps=2, **blk)
        skips.append(c)
        for i in range(num_blocks):
            cout = mc * mult
            keys += _block(f"enc.{r}x{r}_block{i}", c, cout, heads=(cout // 64) * (r in attn_resolutions), **blk)
            c = cout
            skips.append(c)
    for level in reversed(range(len(channel_mult))):
        r, mult = res >> level, channel_mult[level]
        if level == len(channel_mult) - 1:
            keys += _block(f"dec.{r}x{r}_in0", c, c, heads=c // 64, **blk) + _block(f"dec.{r}x{r}_in1", c, c, **blk)
        else:
            keys += _block(f"dec.{r}x{r}_up", c, c, taps=2, **blk)
        for i in range(num_blocks + 1):
            cout = mc * mult
            keys += _block(f"dec.{r}x{r}_block{i}", c + skips.pop(), cout,
                           heads=(cout // 64) * (r in attn_resolutions), **blk)
            c = cout
    return keys + _norm("out_norm", c) + _conv("out_conv", c, cout_img, 3)


def layout(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# ---------------------------------------------------------------------------------------------------
# Tiny configurations.

DDPMPP = dict(embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
              decoder_type="standard", resample_filter=[1, 1])
NCSNPP = dict(embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
              decoder_type="standard", resample_filter=[1, 3, 3, 1])
TINY_SONG = dict(model_channels=16, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8], dropout=0.0)
TINY_ADM = dict(model_channels=32, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16, 8], dropout=0.0)


def tiny(kind, label_dim=10, augment_dim=9, **extra):
    torch.manual_seed(0)
    if kind == "adm":
        return DhariwalUNet(16, 3, 3, label_dim=label_dim, augment_dim=augment_dim, **{**TINY_ADM, **extra})
    song = {"ddpmpp": DDPMPP, "ncsnpp": NCSNPP}.get(kind, {})
    return SongUNet(16, 3, 3, label_dim=label_dim, augment_dim=augment_dim, **{**TINY_SONG, **song, **extra})


def tiny_precond(cls, label_dim=10, arch="ddpmpp", **extra):
    torch.manual_seed(0)
    if arch == "adm":
        kwargs = dict(model_type="DhariwalUNet", **TINY_ADM)
    else:
        kwargs = dict(model_type="SongUNet", augment_dim=9, **TINY_SONG, **DDPMPP)
    return cls(16, 3, label_dim=label_dim, **kwargs, **extra)


def randomize(net, seed=0, scale=0.2):
    """Perturb every parameter, so that zero-initialised output layers no longer hide the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


# ---------------------------------------------------------------------------------------------------
# Layout.

def test_tiny_ddpmpp_block_names_by_hand():
    """Module names of a 2-level, 1-block DDPM++, written out by hand from the rules."""
    net = SongUNet(8, 3, 3, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])
    assert list(net.enc) == ["8x8_conv", "8x8_block0", "4x4_down", "4x4_block0"]
    assert list(net.dec) == ["4x4_in0", "4x4_in1", "4x4_block0", "4x4_block1", "8x8_up", "8x8_block0",
                             "8x8_block1", "8x8_aux_norm", "8x8_aux_conv"]
    names = ["4x4_block0", "4x4_block1", "8x8_block0", "8x8_block1"]
    assert [net.dec[n].in_channels for n in names] == [64, 48, 48, 32]  # skips concatenated
    assert [k for k in net.state_dict() if k.startswith("enc.4x4_down.")] == [
        "enc.4x4_down.norm0.weight", "enc.4x4_down.norm0.bias", "enc.4x4_down.conv0.weight",
        "enc.4x4_down.conv0.bias", "enc.4x4_down.conv0.resample_filter", "enc.4x4_down.affine.weight",
        "enc.4x4_down.affine.bias", "enc.4x4_down.norm1.weight", "enc.4x4_down.norm1.bias",
        "enc.4x4_down.conv1.weight", "enc.4x4_down.conv1.bias", "enc.4x4_down.skip.weight",
        "enc.4x4_down.skip.bias", "enc.4x4_down.skip.resample_filter"]
    attn = [k for k in net.state_dict() if ".qkv.weight" in k]
    assert attn == ["enc.4x4_block0.qkv.weight", "dec.4x4_in0.qkv.weight", "dec.4x4_block1.qkv.weight"]


@pytest.mark.parametrize("kind, derive", [("ddpmpp", song_keys), ("ncsnpp", song_keys), ("adm", adm_keys)])
@pytest.mark.parametrize("label_dim, augment_dim", [(0, 0), (10, 9)])
def test_tiny_state_dict_layout(kind, derive, label_dim, augment_dim):
    net = tiny(kind, label_dim=label_dim, augment_dim=augment_dim)
    song = {"ddpmpp": DDPMPP, "ncsnpp": NCSNPP}.get(kind, {})
    cfg = {**(TINY_ADM if kind == "adm" else TINY_SONG), **song}
    assert layout(net) == derive(16, 3, 3, label_dim=label_dim, augment_dim=augment_dim, **cfg)


def test_song_skip_encoder_decoder_layout_and_forward():
    extra = dict(encoder_type="skip", decoder_type="skip")
    net = tiny("ddpmpp", **extra)
    assert layout(net) == song_keys(16, 3, 3, label_dim=10, augment_dim=9, **{**TINY_SONG, **DDPMPP, **extra})
    out = randomize(net).eval()(torch.randn(2, 3, 16, 16), torch.zeros(2), torch.zeros(2, 10))
    assert out.shape == (2, 3, 16, 16) and out.isfinite().all()


def test_adm_attention_needs_64_channels():
    net = tiny("adm")
    assert net.enc["16x16_block0"].num_heads == 0 and not hasattr(net.enc["16x16_block0"], "qkv")
    assert net.enc["8x8_block0"].num_heads == 1 and net.dec["8x8_in0"].num_heads == 1
    assert all(net.dec[f"16x16_block{i}"].num_heads == 0 for i in range(2))


def test_precond_layouts():
    for cls in (EDMPrecond, VPPrecond, VEPrecond):
        net = tiny_precond(cls)
        assert layout(net) == [(f"model.{k}", s) for k, s in song_keys(16, 3, 3, 10, 9, **TINY_SONG, **DDPMPP)]
    net = tiny_precond(iDDPMPrecond, arch="adm")
    assert layout(net) == [("u", (1001,))] + [(f"model.{k}", s) for k, s in adm_keys(16, 3, 6, 10, **TINY_ADM)]


SONG_CIFAR = dict(model_type="SongUNet", model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13)
# EDM's released pickles (NVlabs/edm, README 'Pre-trained models'):
# (name, resolution, label_dim, kwargs, parameters, state_dict entries)
REAL = [
    ("cifar10-uncond-vp", 32, 0, {**SONG_CIFAR, **DDPMPP}, 55_733_891, 425),
    ("cifar10-cond-vp", 32, 10, {**SONG_CIFAR, **DDPMPP}, 55_735_299, 427),
    ("cifar10-uncond-ve", 32, 0, {**SONG_CIFAR, **NCSNPP}, 56_397_827, 432),
    ("cifar10-cond-ve", 32, 10, {**SONG_CIFAR, **NCSNPP}, 56_400_643, 434),
    ("ffhq64-vp", 64, 0, {**SONG_CIFAR, **DDPMPP, "channel_mult": [1, 2, 2, 2], "dropout": 0.05}, 61_805_571, 553),
    ("ffhq64-ve", 64, 0, {**SONG_CIFAR, **NCSNPP, "channel_mult": [1, 2, 2, 2], "dropout": 0.05}, 62_761_091, 563),
    ("imagenet64-cond-adm", 64, 1000, dict(model_type="DhariwalUNet", use_fp16=True), 295_899_267, 553),
]


@pytest.mark.parametrize("name, res, label_dim, kwargs, params, entries", REAL, ids=[r[0] for r in REAL])
def test_official_sizes(name, res, label_dim, kwargs, params, entries):
    with torch.device("meta"):  # shapes only: no memory, no random init
        net = EDMPrecond(res, 3, label_dim=label_dim, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net.state_dict()) == entries
    derive = adm_keys if kwargs["model_type"] == "DhariwalUNet" else song_keys
    model_kwargs = {k: v for k, v in kwargs.items() if k not in ("model_type", "use_fp16")}
    assert layout(net) == [(f"model.{k}", s) for k, s in derive(res, 3, 3, label_dim, **model_kwargs)]


def test_official_key_examples():
    with torch.device("meta"):
        net = EDMPrecond(32, 3, label_dim=10, **SONG_CIFAR, **DDPMPP)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["model.map_label.weight"] == (128, 10) and shapes["model.map_augment.weight"] == (128, 9)
    assert shapes["model.enc.32x32_conv.weight"] == (128, 3, 3, 3)
    assert shapes["model.enc.32x32_block0.skip.weight"] == (256, 128, 1, 1)
    assert shapes["model.enc.16x16_down.conv0.resample_filter"] == (1, 1, 2, 2)
    assert shapes["model.enc.16x16_block0.qkv.weight"] == (768, 256, 1, 1)
    assert shapes["model.dec.32x32_block4.conv0.weight"] == (256, 384, 3, 3)
    assert shapes["model.dec.32x32_aux_conv.weight"] == (3, 256, 3, 3)
    assert "model.dec.8x8_in0.proj.bias" in shapes and "model.map_augment.bias" not in shapes
    with torch.device("meta"):
        adm = EDMPrecond(64, 3, label_dim=1000)
    shapes = {k: tuple(v.shape) for k, v in adm.state_dict().items()}
    assert shapes["model.map_label.weight"] == (768, 1000) and "model.map_label.bias" not in shapes
    assert "model.enc.32x32_down.skip.resample_filter" in shapes and "model.enc.32x32_down.skip.weight" not in shapes
    assert shapes["model.dec.8x8_in0.affine.weight"] == (1536, 768)
    assert shapes["model.out_conv.weight"] == (3, 192, 3, 3)
    assert [adm.model.enc[f"{r}x{r}_block0"].num_heads for r in (32, 16, 8)] == [6, 9, 12]


# ---------------------------------------------------------------------------------------------------
# Signatures and registries: checkpoints record only the kwargs that were passed.

def _defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_constructor_defaults_equal_edm():
    assert _defaults(SongUNet) == dict(
        label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
        num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0, embedding_type="positional",
        channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1])
    assert _defaults(DhariwalUNet) == dict(
        label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4,
        num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.10, label_dropout=0)
    common = dict(label_dim=0, use_fp16=False, use_bf16=False)
    assert _defaults(EDMPrecond) == dict(common, sigma_min=0, sigma_max=float("inf"), sigma_data=0.5,
                                         model_type="DhariwalUNet")
    assert _defaults(VPPrecond) == dict(common, beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5,
                                        model_type="SongUNet")
    assert _defaults(VEPrecond) == dict(common, sigma_min=0.02, sigma_max=100, model_type="SongUNet")
    assert _defaults(iDDPMPrecond) == dict(common, C_1=0.001, C_2=0.008, M=1000, model_type="DhariwalUNet")
    for cls in PRECONDITIONERS.values():  # EDM's positional order; use_bf16 is keyword-only
        params = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in params[:4]] == ["img_resolution", "img_channels", "label_dim", "use_fp16"]
        assert params[-3].name == "model_type" and params[-2].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
    for cls in ARCHITECTURES.values():
        assert list(inspect.signature(cls).parameters)[:5] == [
            "img_resolution", "in_channels", "out_channels", "label_dim", "augment_dim"]


def test_registries():
    assert ARCHITECTURES == {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
    assert PRECONDITIONERS == {"EDMPrecond": EDMPrecond, "VPPrecond": VPPrecond, "VEPrecond": VEPrecond,
                               "iDDPMPrecond": iDDPMPrecond}
    with pytest.raises(ValueError, match="model_type"):
        EDMPrecond(8, 3, model_type="Linear")


# ---------------------------------------------------------------------------------------------------
# Table 1 coefficients.

def test_edm_coefficients_at_init_sigma():
    c = tiny_precond(EDMPrecond).coefficients(torch.tensor(2.5))
    assert [x.item() for x in c] == pytest.approx([0.038462, 0.490290, 0.392232, 0.229073], abs=1e-6)


@given(st.floats(0.002, 80.0))
def test_table1_closed_forms(sigma):
    s = torch.tensor([sigma], dtype=torch.float64)  # float64 so that only the formulas are compared
    sd, close = 0.5, dict(rel=1e-9, abs=1e-12)

    got = [c.item() for c in EDM.coefficients(s)]
    assert got == pytest.approx([sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / math.hypot(sigma, sd),
                                 1 / math.hypot(sigma, sd), math.log(sigma) / 4], **close)

    t = (math.sqrt(0.1 ** 2 + 2 * 19.9 * math.log1p(sigma ** 2)) - 0.1) / 19.9
    assert math.sqrt(math.expm1(0.5 * 19.9 * t ** 2 + 0.1 * t)) == pytest.approx(sigma, rel=1e-9)
    got = [c.item() for c in VP.coefficients(s)]
    assert got == pytest.approx([1, -sigma, 1 / math.sqrt(sigma ** 2 + 1), 999 * t], **close)

    got = [c.item() for c in VE.coefficients(s)]
    assert got == pytest.approx([1, sigma, 1, math.log(sigma / 2)], **close)

    j = int(np.argmin(np.abs(IDDPM_U64 - sigma)))
    got = [c.item() for c in IDDPM.coefficients(s)]
    assert got[:3] == pytest.approx([1, -sigma, 1 / math.sqrt(sigma ** 2 + 1)], **close)
    assert abs(got[3] - (999 - j)) <= 1  # float32 u vs float64 u may disagree at a midpoint


def _iddpm_u64(M=1000, C_1=0.001, C_2=0.008):
    """u_j in float64 from the iDDPM recursion (EDM Appendix C.3.4)."""
    abar = np.sin(0.5 * np.pi * np.arange(M + 1) / M / (C_2 + 1)) ** 2
    u = np.zeros(M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(abar[j - 1] / abar[j], C_1) - 1)
    return u


EDM, VP, VE = (tiny_precond(c, label_dim=0) for c in (EDMPrecond, VPPrecond, VEPrecond))
IDDPM = tiny_precond(iDDPMPrecond, label_dim=0, arch="adm")
IDDPM_U64 = _iddpm_u64()


def test_schedule_ranges_and_round_sigma():
    np.testing.assert_allclose(IDDPM.u.numpy(), IDDPM_U64, rtol=1e-3)  # EDM's recursion runs in float32
    assert IDDPM.sigma_min == pytest.approx(IDDPM_U64[999], rel=1e-3) and IDDPM.sigma_min < 0.0065
    assert IDDPM.sigma_max == pytest.approx(IDDPM_U64[0], rel=1e-3) and IDDPM.sigma_max > 2e4
    # sigma(1e-5) in float32 (as EDM computes it) is 0.000977 rather than 0.0010005.
    assert VP.sigma_min == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9e-10 + 1e-6)), rel=0.03)
    assert VP.sigma_max == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 + 0.1)), rel=1e-5)
    sigma = torch.tensor([[0.5, 3.0], [10.0, 80.0]], dtype=torch.float64)
    snapped = IDDPM.round_sigma(sigma)
    assert snapped.shape == sigma.shape and snapped.dtype == torch.float64
    idx = IDDPM.round_sigma(sigma, return_index=True)
    assert torch.equal(IDDPM.u[idx].double(), snapped)
    assert EDM.round_sigma(0.7).item() == pytest.approx(0.7) and torch.is_tensor(VE.round_sigma(0.7))


# ---------------------------------------------------------------------------------------------------
# Behaviour of the preconditioned networks.

PRECONDS = [(EDMPrecond, "ddpmpp"), (VPPrecond, "ddpmpp"), (VEPrecond, "ddpmpp"), (iDDPMPrecond, "adm")]
BEHAVIOUR = [(EDMPrecond, "ddpmpp"), (EDMPrecond, "adm"), (iDDPMPrecond, "adm")]  # the call is shared


@pytest.mark.parametrize("cls, arch", BEHAVIOUR, ids=[f"{c.__name__}-{a}" for c, a in BEHAVIOUR])
def test_precond_forward_behaviour(cls, arch):
    net = randomize(tiny_precond(cls, label_dim=10, arch=arch, use_fp16=True, use_bf16=True)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 16, 16, generator=g, requires_grad=True)
    labels = F.one_hot(torch.tensor([1, 4, 7]), 10).float()
    aug = torch.randn(3, 9, generator=g) if arch == "ddpmpp" else None
    kw = dict(augment_labels=aug) if aug is not None else {}
    seen = []
    net.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))

    out = net(x, torch.tensor(1.3), labels, **kw)  # 0-d sigma broadcasts, as in the sampler
    assert out.shape == x.shape and out.dtype == torch.float32 and seen == [torch.float32]  # CPU: always fp32
    close = dict(rtol=1e-4, atol=1e-4)  # batch-1 vs batch-3 matmuls round differently
    for sigma in (torch.full([3], 1.3), torch.full([3, 1, 1, 1], 1.3, dtype=torch.float64), 1.3):
        torch.testing.assert_close(net(x, sigma, labels, **kw), out, **close)
    per_sample = net(x, torch.tensor([0.2, 1.3, 9.0]), labels, **kw)
    torch.testing.assert_close(per_sample[1], out[1], **close)
    assert not torch.allclose(per_sample[0], out[0])

    other = net(x, torch.tensor(1.3), labels.roll(1, dims=0), **kw)  # labels matter
    assert (other - out).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    # labels None is a zero row of batch 1, broadcast: a batch-1 matmul rounds unlike a batch-3 one on some CPUs
    torch.testing.assert_close(net(x, torch.tensor(1.3), None, **kw), net(x, torch.tensor(1.3), 0 * labels, **kw),
                               **close)
    if aug is not None:  # map_augment has no bias: zero augment labels = none
        torch.testing.assert_close(net(x, torch.tensor(1.3), labels, augment_labels=0 * aug),
                                   net(x, torch.tensor(1.3), labels), **close)

    out.square().sum().backward()
    assert x.grad is not None and x.grad.isfinite().all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("cls, arch", PRECONDS, ids=[c.__name__ for c, _ in PRECONDS])
def test_precond_is_table1_composition(cls, arch):
    """D = c_skip x + c_out F(c_in x, c_noise), with F's first img_channels outputs (iDDPM's F has 2C)."""
    net = randomize(tiny_precond(cls, arch=arch, label_dim=0)).eval()
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 4.0])
    c_skip, c_out, c_in, c_noise = net.coefficients(sigma.reshape(-1, 1, 1, 1))
    raw = net.model(c_in * x, c_noise.flatten(), None)
    assert raw.shape[1] == (6 if cls is iDDPMPrecond else 3)
    torch.testing.assert_close(net(x, sigma), c_skip * x + c_out * raw[:, :3])


def test_compute_dtype_selection():
    net = EDM
    cuda, cpu = types.SimpleNamespace(device=torch.device("cuda")), torch.zeros(1)
    for fp16, bf16, want in [(False, False, torch.float32), (True, False, torch.float16),
                             (False, True, torch.bfloat16), (True, True, torch.bfloat16)]:
        net.use_fp16, net.use_bf16 = fp16, bf16
        assert net.compute_dtype(cuda) == want
        assert net.compute_dtype(cuda, force_fp32=True) == torch.float32
        assert net.compute_dtype(cpu) == torch.float32
    net.use_fp16 = net.use_bf16 = False


@pytest.mark.parametrize("kind", ["ddpmpp", "adm"])
def test_dropout_and_label_dropout(kind):
    net = randomize(tiny(kind, dropout=0.5, label_dropout=1.0))
    x, noise, labels = torch.randn(2, 3, 16, 16), torch.tensor([0.1, -0.3]), torch.eye(10)[:2]
    net.eval()
    torch.testing.assert_close(net(x, noise, labels), net(x, noise, labels))
    net.train()
    torch.manual_seed(0)
    dropped = net(x, noise, labels)
    torch.manual_seed(0)
    torch.testing.assert_close(net(x, noise, 0 * labels), dropped)  # label_dropout=1 drops every label
    assert not torch.allclose(net(x, noise, labels), dropped)  # fresh dropout masks
    x.requires_grad_(True)
    net(x, noise, labels).square().sum().backward()  # in-place ops stay autograd-safe in training mode
    assert x.grad.abs().sum() > 0 and net.map_label.weight.grad.abs().sum() == 0  # labels were dropped
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("map_augment"))


def test_initialisation_follows_edm():
    song, adm = tiny("ncsnpp"), tiny("adm")
    w = song.dec["16x16_aux_conv"].weight
    assert 0 < w.abs().max() <= 1e-5 * math.sqrt(6 / (9 * 16 + 9 * 3)) and song.dec["16x16_aux_conv"].bias.eq(0).all()
    qkv = song.dec["4x4_in0"].qkv.weight  # xavier_uniform * sqrt(0.2)
    bound = math.sqrt(0.2) * math.sqrt(6 / (32 + 96))
    assert 0.5 * bound < qkv.abs().max() <= bound
    assert song.map_noise.freqs.std().item() == pytest.approx(16, rel=0.5)
    assert adm.out_conv.weight.eq(0).all() and adm.enc["8x8_block0"].proj.weight.eq(0).all()
    assert adm.map_layer0.bias.abs().max() > 0 and adm.map_augment.weight.eq(0).all()
    label_w = adm.map_label.weight  # kaiming_normal * sqrt(label_dim): unit variance
    assert label_w.std().item() == pytest.approx(1.0, rel=0.2)
    norm = adm.enc["8x8_block0"].norm0
    assert norm.weight.eq(1).all() and norm.bias.eq(0).all()
    assert [GroupNorm(c).num_groups for c in (16, 64, 128, 256)] == [4, 16, 32, 32]
    assert song.enc["16x16_block0"].norm0.eps == 1e-6 and adm.out_norm.eps == 1e-5
    # Same seed, same weights (the draw order is fixed).
    torch.testing.assert_close(tiny("ncsnpp").state_dict(), song.state_dict(), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------
# Independent numerical checks of the layers.

def test_conv_resampling_with_box_filter_is_pool_and_nearest():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    down = Conv2d(4, 5, kernel=3, down=True, init_bias=1)
    plain = lambda y, m: F.conv2d(y, m.weight, m.bias, padding=1)  # noqa: E731
    torch.testing.assert_close(down(x), plain(F.avg_pool2d(x, 2), down))
    up = Conv2d(4, 5, kernel=3, up=True, init_bias=1)
    torch.testing.assert_close(up(x), plain(F.interpolate(x, scale_factor=2, mode="nearest"), up))
    fused = Conv2d(4, 5, kernel=3, down=True, fused_resample=True, init_bias=1)
    torch.testing.assert_close(fused(x), F.avg_pool2d(plain(x, fused), 2))
    torch.testing.assert_close(Conv2d(4, 4, kernel=0, down=True)(x), F.avg_pool2d(x, 2))
    assert Conv2d(4, 4, kernel=1).resample_filter is None


def test_conv_fir_filter_1331():
    """[1,3,3,1] filter: separable, normalised; downsampling is a stride-2 4x4 blur, upsampling its adjoint x4."""
    f = torch.tensor([1.0, 3, 3, 1]) / 8
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    down = Conv2d(2, 2, kernel=0, down=True, resample_filter=[1, 3, 3, 1]).double()
    up = Conv2d(2, 2, kernel=0, up=True, resample_filter=[1, 3, 3, 1]).double()
    torch.testing.assert_close(down.resample_filter[0, 0], torch.outer(f, f).double())
    xp = F.pad(x, (1, 1, 1, 1))
    expect = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            expect[..., i, j] = (xp[..., 2 * i:2 * i + 4, 2 * j:2 * j + 4] * torch.outer(f, f)).sum((-1, -2))
    torch.testing.assert_close(down(x), expect)
    y = torch.randn(1, 2, 4, 4, dtype=torch.float64)  # <down x, y> = <x, up y> / 4
    assert (down(x) * y).sum().item() == pytest.approx((x * up(y)).sum().item() / 4, rel=1e-10)
    assert up(torch.ones(1, 1, 4, 4, dtype=torch.float64).expand(1, 2, 4, 4))[..., 1:-1, 1:-1].allclose(
        torch.ones(1, 2, 6, 6, dtype=torch.float64))
    fused = Conv2d(2, 5, kernel=3, down=True, resample_filter=[1, 3, 3, 1], fused_resample=True)
    assert fused(torch.randn(1, 2, 8, 8)).shape == (1, 5, 4, 4)


def test_attention_block_matches_per_head_reference():
    """qkv channels (head * Ch + c) * 3 + j hold q/k/v; softmax(q^T k / sqrt(Ch)) per head, then proj and skip."""
    torch.manual_seed(0)
    block = randomize(UNetBlock(8, 8, 4, attention=True, num_heads=2, skip_scale=0.7)).eval()
    captured = {}
    block.qkv.register_forward_hook(lambda m, a, out: captured.update(qkv=out.detach().double()))
    block.proj.register_forward_hook(lambda m, a, out: captured.update(attn_in=a[0].detach().double()))
    block.norm2.register_forward_pre_hook(lambda m, a: captured.update(h=a[0].detach().double()))
    out = block(torch.randn(2, 8, 4, 4), torch.randn(2, 4))

    qkv = captured["qkv"].reshape(2, 24, 16)
    heads, ch = 2, 4
    expect = torch.zeros(2, 8, 16, dtype=torch.float64)
    for b in range(2):
        for hd in range(heads):
            rows = [(hd * ch + c) * 3 for c in range(ch)]
            q, k, v = (qkv[b, [r + j for r in rows]] for j in range(3))
            w = torch.softmax(q.T @ k / math.sqrt(ch), dim=1)  # [query, key]
            expect[b, hd * ch:(hd + 1) * ch] = v @ w.T
    torch.testing.assert_close(captured["attn_in"].reshape(2, 8, 16), expect, rtol=1e-5, atol=1e-6)
    proj = F.conv2d(captured["attn_in"], block.proj.weight.double(), block.proj.bias.double())
    torch.testing.assert_close(out.double(), (proj + captured["h"]) * 0.7, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_residual_block_formula(adaptive):
    torch.manual_seed(0)
    block = randomize(UNetBlock(4, 8, 6, down=True, adaptive_scale=adaptive, resample_proj=True,
                                skip_scale=0.5, eps=1e-6)).eval()
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 6)
    gn = lambda y, m: F.group_norm(y, m.num_groups, m.weight, m.bias, m.eps)  # noqa: E731
    h = F.conv2d(F.avg_pool2d(F.silu(gn(x, block.norm0)), 2), block.conv0.weight, block.conv0.bias, padding=1)
    p = (emb @ block.affine.weight.T + block.affine.bias)[:, :, None, None]
    if adaptive:
        scale, shift = p.chunk(2, dim=1)
        h = F.silu(shift + gn(h, block.norm1) * (1 + scale))
    else:
        h = F.silu(gn(h + p, block.norm1))
    skip = F.conv2d(F.avg_pool2d(x, 2), block.skip.weight, block.skip.bias)
    expect = (F.conv2d(h, block.conv1.weight, block.conv1.bias, padding=1) + skip) * 0.5
    torch.testing.assert_close(block(x, emb), expect, rtol=1e-5, atol=1e-5)
    assert block.norm0.num_groups == 1 and block.norm1.num_groups == 2


def test_embeddings():
    x = torch.tensor([0.5, -2.0])
    for endpoint in (False, True):
        freqs = np.array([1e-4 ** (i / (8 - endpoint)) for i in range(8)])
        arg = x.numpy()[:, None].astype(np.float64) * freqs
        expect = np.concatenate([np.cos(arg), np.sin(arg)], axis=1)
        np.testing.assert_allclose(PositionalEmbedding(16, endpoint=endpoint)(x).numpy(), expect, atol=1e-6)
    four = FourierEmbedding(16)
    arg = 2 * np.pi * x.numpy()[:, None].astype(np.float64) * four.freqs.numpy()
    np.testing.assert_allclose(four(x).numpy(), np.concatenate([np.cos(arg), np.sin(arg)], 1), atol=1e-4)


@pytest.mark.parametrize("kind", ["ddpmpp", "ncsnpp", "adm"])
def test_mapping_network(kind):
    """Song: [sin, cos] + map_label(labels sqrt(L)) + map_augment(aug) -> silu(L1(silu(L0(.)))).
    ADM: [cos, sin] + map_augment(aug) -> L1(silu(L0(.))) + map_label(labels) -> silu."""
    net = randomize(tiny(kind)).eval()
    seen = {}
    net.map_layer0.register_forward_pre_hook(lambda m, a: seen.update(in0=a[0]))
    first = net.enc[next(k for k in net.enc if "block" in k)]
    first.affine.register_forward_pre_hook(lambda m, a: seen.update(emb=a[0]))
    noise, labels, aug = torch.tensor([0.3, -1.1]), torch.eye(10)[[2, 5]], torch.randn(2, 9)
    net(torch.randn(2, 3, 16, 16), noise, labels, augment_labels=aug)
    cos_sin = net.map_noise(noise)
    half = cos_sin.shape[1] // 2
    lin = lambda m, y: y @ m.weight.T + (0 if m.bias is None else m.bias)  # noqa: E731
    if kind == "adm":
        in0 = cos_sin + lin(net.map_augment, aug)
        emb = F.silu(lin(net.map_layer1, F.silu(lin(net.map_layer0, in0))) + lin(net.map_label, labels))
    else:
        sin_cos = torch.cat([cos_sin[:, half:], cos_sin[:, :half]], dim=1)
        in0 = sin_cos + lin(net.map_label, labels * math.sqrt(10)) + lin(net.map_augment, aug)
        emb = F.silu(lin(net.map_layer1, F.silu(lin(net.map_layer0, in0))))
    torch.testing.assert_close(seen["in0"], in0)
    torch.testing.assert_close(seen["emb"], emb)
