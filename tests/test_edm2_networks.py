"""EDM2's magnitude-preserving U-Net (`full.nets.edm2`): state_dict layout, constructor defaults, released
sizes, independent re-computations of the MP formulas, preconditioning, logvar head, SiDA's encoder logits
and the forced-weight-normalisation switch."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from full.nets.edm2 import (EDM2_CONFIGS, Block, EDM2Precond, MPConv, MPFourier, UNet, build_edm2, mp_cat,
                            mp_silu, mp_sum, normalize, resample)


pytestmark = pytest.mark.usefixtures("single_thread")  # the networks here are tiny


# A tiny network: 8x8 -> 4x4, attention at 4x4 with 8 channels per head (so 32 channels give 4 heads).
TINY = dict(img_resolution=8, img_channels=3, model_channels=16, channel_mult=[1, 2], num_blocks=1,
            attn_resolutions=[4], channels_per_head=8, logvar_channels=8)


def tiny(label_dim=3, seed=0, **overrides):
    torch.manual_seed(seed)
    return EDM2Precond(**{**TINY, "label_dim": label_dim, **overrides})


def randomize_gains(net, value=0.7):
    """emb_gain and out_gain start at 0, which would hide most of the network; give them a value."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gain"):
                p.fill_(value)
    return net


def inputs(n=2, label_dim=3, res=8, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, res, res, generator=g)
    sigma = torch.exp(torch.randn(n, generator=g))
    labels = F.one_hot(torch.arange(n) % label_dim, label_dim).float() if label_dim else None
    return x, sigma, labels


def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------
# State-dict layout, derived by hand from EDM2's constructors for TINY with label_dim 3:
# widths [16, 32], cnoise 16, cemb 32; encoder 8x8_conv, 8x8_block0, 4x4_down, 4x4_block0 (attn, 16 -> 32);
# skips [16, 16, 16, 32]; decoder 4x4_in0 (attn), 4x4_in1, 4x4_block0 (64 -> 32, attn), 4x4_block1 (48 -> 32,
# attn), 8x8_up, 8x8_block0 (48 -> 16), 8x8_block1 (32 -> 16); out_conv 16 -> 3. Block order: emb_gain,
# conv_res0 (enc: out -> out, dec: in -> out), emb_linear, conv_res1, conv_skip, attn_qkv, attn_proj.

def _blk(prefix, cin, cout, enc, skip=False, attn=False):
    c0 = cout if enc else cin
    keys = [(f"{prefix}.emb_gain", ()), (f"{prefix}.conv_res0.weight", (cout, c0, 3, 3)),
            (f"{prefix}.emb_linear.weight", (cout, 32)), (f"{prefix}.conv_res1.weight", (cout, cout, 3, 3))]
    if skip:
        keys.append((f"{prefix}.conv_skip.weight", (cout, cin, 1, 1)))
    if attn:
        keys += [(f"{prefix}.attn_qkv.weight", (3 * cout, cout, 1, 1)), (f"{prefix}.attn_proj.weight", (cout, cout, 1, 1))]
    return keys


EXPECTED_TINY_KEYS = [
    ("unet.out_gain", ()),
    ("unet.emb_fourier.freqs", (16,)),
    ("unet.emb_fourier.phases", (16,)),
    ("unet.emb_noise.weight", (32, 16)),
    ("unet.emb_label.weight", (32, 3)),
    ("unet.enc.8x8_conv.weight", (16, 4, 3, 3)),
    *_blk("unet.enc.8x8_block0", 16, 16, enc=True),
    *_blk("unet.enc.4x4_down", 16, 16, enc=True),
    *_blk("unet.enc.4x4_block0", 16, 32, enc=True, skip=True, attn=True),
    *_blk("unet.dec.4x4_in0", 32, 32, enc=False, attn=True),
    *_blk("unet.dec.4x4_in1", 32, 32, enc=False),
    *_blk("unet.dec.4x4_block0", 64, 32, enc=False, skip=True, attn=True),
    *_blk("unet.dec.4x4_block1", 48, 32, enc=False, skip=True, attn=True),
    *_blk("unet.dec.8x8_up", 32, 32, enc=False),
    *_blk("unet.dec.8x8_block0", 48, 16, enc=False, skip=True),
    *_blk("unet.dec.8x8_block1", 32, 16, enc=False, skip=True),
    ("unet.out_conv.weight", (3, 16, 3, 3)),
    ("logvar_fourier.freqs", (8,)),
    ("logvar_fourier.phases", (8,)),
    ("logvar_linear.weight", (1, 8)),
]


def test_state_dict_keys_shapes_and_order_match_edm2():
    sd = tiny().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == EXPECTED_TINY_KEYS
    buffers = {k for k, _ in tiny().named_buffers()}
    assert buffers == {"unet.emb_fourier.freqs", "unet.emb_fourier.phases", "logvar_fourier.freqs",
                       "logvar_fourier.phases"}


def test_unconditional_network_has_no_label_layer_and_loads_strictly():
    keys = list(tiny(label_dim=0).state_dict())
    assert keys == [k for k, _ in EXPECTED_TINY_KEYS if k != "unet.emb_label.weight"]
    net = tiny(label_dim=0, seed=3)
    net.load_state_dict(tiny(label_dim=0, seed=4).state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        net.load_state_dict(tiny(label_dim=3).state_dict(), strict=True)


def test_attention_needs_a_full_head():
    # EDM2: num_heads = out_channels // channels_per_head, so 32 channels with the default 64 have no attention.
    keys = list(EDM2Precond(**{**TINY, "label_dim": 0, "channels_per_head": 64}).state_dict())
    assert not any("attn_" in k for k in keys)
    block = Block(32, 32, 8, attention=True, channels_per_head=8)
    assert block.num_heads == 4


def test_constructor_defaults_equal_edm2():
    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert list(inspect.signature(EDM2Precond.__init__).parameters)[1:4] == ["img_resolution", "img_channels",
                                                                              "label_dim"]
    assert defaults(EDM2Precond.__init__) == dict(use_fp16=True, sigma_data=0.5, logvar_channels=128)
    assert defaults(UNet.__init__) == dict(model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_noise=None,
                                           channel_mult_emb=None, num_blocks=3, attn_resolutions=[16, 8],
                                           label_balance=0.5, concat_balance=0.5)
    assert defaults(Block.__init__) == dict(flavor="enc", resample_mode="keep", resample_filter=[1, 1],
                                            attention=False, channels_per_head=64, dropout=0, res_balance=0.3,
                                            attn_balance=0.3, clip_act=256)
    assert defaults(MPFourier.__init__) == dict(bandwidth=1)
    call = inspect.signature(EDM2Precond.forward).parameters
    assert [k for k in call][1:6] == ["x", "sigma", "class_labels", "force_fp32", "return_logvar"]
    assert call["return_logits"].kind is inspect.Parameter.KEYWORD_ONLY and call["return_logits"].default is False


# ---------------------------------------------------------------------------------------------------
# Released sizes: parameter counts built on the meta device (no memory), configs as train_edm2.py sets them.

RELEASED_PARAMS = {
    "img512-xs": 124_713_253,
    "img512-s": 280_212_837,
    "img512-m": 497_807_781,
    "img512-l": 777_498_085,
    "img512-xl": 1_119_283_749,
    "img512-xxl": 1_523_164_773,
    "img64-s": 280_209_381,
    "img64-m": 497_803_173,
    "img64-l": 777_492_325,
    "img64-xl": 1_119_276_837,
    "img512-xs-uncond": 124_201_253,
    "img512-s-uncond": 279_444_837,
    "img64-xs": 124_710_949,
}


def test_released_parameter_counts_on_meta_device():
    assert set(EDM2_CONFIGS) == set(RELEASED_PARAMS)
    for name, expected in RELEASED_PARAMS.items():
        with torch.device("meta"):
            net = build_edm2(name)
        assert next(net.parameters()).is_meta
        assert sum(p.numel() for p in net.parameters()) == expected, name
        assert len(net.state_dict()) == (202 if "uncond" in name else 203), name
    # Orders of magnitude stated by EDM2 (Table 2): XS ~125 M, S ~280 M, XXL ~1.5 B parameters.
    assert round(RELEASED_PARAMS["img512-xs"] / 1e6) == 125
    assert round(RELEASED_PARAMS["img512-s"] / 1e6) == 280
    assert round(RELEASED_PARAMS["img512-xxl"] / 1e8) == 15


def test_released_configs_follow_train_edm2_presets():
    channels = {"xs": 128, "s": 192, "m": 256, "l": 320, "xl": 384, "xxl": 448}
    for name, cfg in EDM2_CONFIGS.items():
        space, size = name.split("-")[:2]
        assert cfg["img_resolution"] == 64
        assert cfg["img_channels"] == (4 if space == "img512" else 3)
        assert cfg["label_dim"] == (0 if name.endswith("uncond") else 1000)
        assert cfg["model_channels"] == channels[size]
        assert cfg["dropout"] == (0.0 if size in ("xs", "s") else 0.1)
    with pytest.raises(KeyError):
        build_edm2("img512-xxxl")


# ---------------------------------------------------------------------------------------------------
# Magnitude-preserving primitives, recomputed independently.

def test_normalize_gives_unit_rms_per_output_channel():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 3, 3, generator=g) * torch.tensor([0.1, 1, 3, 10, 30, 100]).reshape(6, 1, 1, 1)
    rms = normalize(w).square().mean(dim=(1, 2, 3)).sqrt()
    close(rms, torch.ones(6), rtol=0, atol=2e-3)
    # exact form: w / (eps + ||w_i|| / sqrt(n_i))
    expected = w / (1e-4 + w.flatten(1).norm(dim=1).reshape(6, 1, 1, 1) / 3 / math.sqrt(5))
    close(normalize(w), expected)
    # dim=1 (pixel norm): unit RMS over channels at every pixel
    x = torch.randn(2, 7, 4, 4, generator=g) * 5
    close(normalize(x, dim=1).square().mean(dim=1), torch.ones(2, 4, 4), rtol=0, atol=1e-3)


def test_mp_silu_scaling():
    x = torch.linspace(-6, 6, 101)
    close(mp_silu(x), x * torch.sigmoid(x) / 0.596)
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    assert abs(mp_silu(z).square().mean().sqrt().item() - 1) < 0.01


@pytest.mark.parametrize("t", [0.3, 0.5, 0.8])
def test_mp_sum_keeps_unit_magnitude(t):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    out = mp_sum(a, b, t)
    close(out, ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t ** 2))
    assert abs(out.std().item() - 1) < 0.01


@pytest.mark.parametrize("t", [0.5, 0.2])
def test_mp_cat_keeps_unit_magnitude_and_balance(t):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4000, 24, generator=g), torch.randn(4000, 8, generator=g)
    out = mp_cat(a, b, dim=1, t=t)
    assert out.shape == (4000, 32)
    assert abs(out.square().mean().item() - 1) < 0.02
    # energy split between the parts is (1 - t)^2 : t^2
    ea, eb = out[:, :24].square().sum(1).mean(), out[:, 24:].square().sum(1).mean()
    assert abs((eb / ea).item() - t ** 2 / (1 - t) ** 2) < 0.03 * t ** 2 / (1 - t) ** 2
    # exact per-part scale factors
    c = math.sqrt(32 / ((1 - t) ** 2 + t ** 2))
    close(out[:, :24], a * c * (1 - t) / math.sqrt(24))
    close(out[:, 24:], b * c * t / math.sqrt(8))


def test_resample_is_average_pooling_and_nearest_upsampling():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert resample(x, mode="keep") is x
    close(resample(x, mode="down"), F.avg_pool2d(x, 2))
    close(resample(x, mode="up"), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    with pytest.raises(ValueError):
        resample(x, mode="sideways")


def test_mpfourier_formula_and_statistics():
    torch.manual_seed(0)
    emb = MPFourier(20_000, bandwidth=2)
    f, p = emb.freqs / (2 * math.pi), emb.phases / (2 * math.pi)
    assert abs(f.std().item() - 2) < 0.05 and 0 <= p.min() and p.max() < 1 and abs(p.mean().item() - 0.5) < 0.01
    x = torch.tensor([-1.3, 0.0, 0.25, 2.0])
    expected = math.sqrt(2) * torch.cos(2 * math.pi * (x[:, None].double() * f.double() + p.double()))
    close(emb(x).double(), expected, rtol=0, atol=2e-4)
    assert emb(x).shape == (4, 20_000)
    assert abs(emb(torch.tensor([0.7])).square().mean().item() - 1) < 0.03


def test_mpconv_effective_weight_and_outputs():
    torch.manual_seed(0)
    conv = MPConv(5, 4, kernel=[3, 3]).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([0.2, 1, 5, 30]).reshape(4, 1, 1, 1))
    w, gain = conv.weight.detach().clone(), 1.7
    norms = w.flatten(1).norm(dim=1).reshape(4, 1, 1, 1)
    direct = gain * w / (norms + 1e-4 * math.sqrt(45))  # normalized(w) * gain / sqrt(fan_in)
    close(conv.effective_weight(gain), direct)
    x = torch.randn(2, 5, 6, 6)
    close(conv(x, gain=gain), F.conv2d(x, direct, padding=1))
    # fully connected
    fc = MPConv(10, 3, kernel=[]).eval()
    wf = fc.weight.detach()
    direct_fc = wf / (wf.norm(dim=1, keepdim=True) + 1e-4 * math.sqrt(10))
    z = torch.randn(7, 10)
    close(fc(z), z @ direct_fc.t())
    # unit-variance input, gain 1 -> unit-variance output
    big = MPConv(256, 64, kernel=[]).eval()
    u = big(torch.randn(4000, 256))
    assert abs(u.std().item() - 1) < 0.03


# ---------------------------------------------------------------------------------------------------
# Block and U-Net recomputed from Figure 21 with plain tensor operations.

def _w(conv, gain=1.0):
    w = conv.weight.detach().double()
    return gain * w / (w.flatten(1).norm(dim=1).reshape(-1, *[1] * (w.ndim - 1)) + 1e-4 * math.sqrt(w[0].numel()))


def _conv(conv, x, gain=1.0):
    w = _w(conv, gain)
    return x @ w.t() if w.ndim == 2 else F.conv2d(x, w, padding=w.shape[-1] // 2)


def _pixnorm(x, dim):
    return x / (1e-4 + x.square().mean(dim=dim, keepdim=True).sqrt())


def _silu(x):
    return x * torch.sigmoid(x) / 0.596


def _block_ref(b, x, emb):
    if b.resample_mode == "down":
        x = F.avg_pool2d(x, 2)
    elif b.resample_mode == "up":
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    if b.flavor == "enc":
        x = _conv(b.conv_skip, x) if b.conv_skip is not None else x
        x = _pixnorm(x, 1)
    y = _conv(b.conv_res0, _silu(x))
    y = _silu(y * (1 + _conv(b.emb_linear, emb, float(b.emb_gain.detach())))[:, :, None, None])
    y = _conv(b.conv_res1, y)
    if b.flavor == "dec" and b.conv_skip is not None:
        x = _conv(b.conv_skip, x)
    tr = b.res_balance
    x = ((1 - tr) * x + tr * y) / math.sqrt((1 - tr) ** 2 + tr ** 2)
    if b.num_heads:
        n, c, h, w = x.shape
        qkv = _conv(b.attn_qkv, x).reshape(n, b.num_heads, c // b.num_heads, 3, h * w)  # EDM2's channel layout
        q, k, v = (_pixnorm(qkv[:, :, :, i], 2) for i in range(3))
        att = torch.einsum("nhci,nhcj->nhij", q, k / math.sqrt(q.shape[2])).softmax(dim=-1)
        y = _conv(b.attn_proj, torch.einsum("nhij,nhcj->nhci", att, v).reshape(n, c, h, w))
        ta = b.attn_balance
        x = ((1 - ta) * x + ta * y) / math.sqrt((1 - ta) ** 2 + ta ** 2)
    return x.clamp(-b.clip_act, b.clip_act) if b.clip_act is not None else x


def _cat_ref(a, b, t):
    na, nb = a.shape[1], b.shape[1]
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * scale * (1 - t) / math.sqrt(na), b * scale * t / math.sqrt(nb)], dim=1)


def _unet_ref(u, x, noise, labels):
    f = u.emb_fourier
    emb = _conv(u.emb_noise, math.sqrt(2) * torch.cos(noise[:, None].double() * f.freqs.double() + f.phases.double()))
    if u.emb_label is not None:
        e2, t = _conv(u.emb_label, labels.double() * math.sqrt(labels.shape[1])), u.label_balance
        emb = ((1 - t) * emb + t * e2) / math.sqrt((1 - t) ** 2 + t ** 2)
    emb = _silu(emb)
    h = torch.cat([x.double(), torch.ones_like(x[:, :1]).double()], dim=1)
    skips = []
    for name, block in u.enc.items():
        h = _conv(block, h) if isinstance(block, MPConv) else _block_ref(block, h, emb)
        skips.append(h)
    logits = h.mean(dim=1, keepdim=True)
    for name, block in u.dec.items():
        if "block" in name:
            h = _cat_ref(h, skips.pop(), u.concat_balance)
        h = _block_ref(block, h, emb)
    return _conv(u.out_conv, h, float(u.out_gain.detach())), logits


@pytest.mark.parametrize("flavor,mode,cin,cout,heads", [("enc", "keep", 8, 16, 2), ("enc", "down", 16, 16, 0),
                                                        ("dec", "keep", 24, 16, 4), ("dec", "up", 16, 16, 0)])
def test_block_matches_figure_21(flavor, mode, cin, cout, heads):
    torch.manual_seed(0)
    block = Block(cin, cout, 12, flavor=flavor, resample_mode=mode, attention=heads > 0,
                  channels_per_head=cout // max(heads, 1), res_balance=0.4, attn_balance=0.2).eval()
    assert block.num_heads == heads
    with torch.no_grad():
        block.emb_gain.fill_(0.8)
    x, emb = torch.randn(2, cin, 8, 8), torch.randn(2, 12)
    close(block(x, emb).double(), _block_ref(block, x.double(), emb.double()))
    block.clip_act = 0.25
    out = block(x, emb)
    assert out.abs().max() <= 0.25 and out.abs().max() == 0.25


@pytest.mark.parametrize("label_dim", [3, 0])
def test_unet_and_logits_match_recomputation(label_dim):
    net = randomize_gains(tiny(label_dim=label_dim)).eval()
    x, sigma, labels = inputs(2, label_dim)
    c_in = 1 / (sigma ** 2 + 0.25).sqrt().reshape(-1, 1, 1, 1)
    F_ref, logits_ref = _unet_ref(net.unet, c_in * x, sigma.log() / 4, labels)
    D, logits = net(x, sigma, labels, return_logits=True)
    s = sigma.double().reshape(-1, 1, 1, 1)
    D_ref = 0.25 / (s ** 2 + 0.25) * x.double() + s * 0.5 / (s ** 2 + 0.25).sqrt() * F_ref
    close(D.double(), D_ref)
    close(logits.double(), logits_ref)


# ---------------------------------------------------------------------------------------------------
# Forward, backward, labels, sigma shapes, precision of stored weights.

@pytest.mark.parametrize("label_dim", [3, 0])
def test_tiny_forward_backward_shapes(label_dim):
    net = randomize_gains(tiny(label_dim=label_dim)).train()
    x, sigma, labels = inputs(3, label_dim)
    x.requires_grad_(True)
    D, logvar = net(x, sigma, labels, return_logvar=True)
    assert D.shape == x.shape and D.dtype == torch.float32
    assert logvar.shape == (3, 1, 1, 1)
    (D.square().mean() + logvar.mean()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_labels_none_equals_zero_row():
    net = randomize_gains(tiny()).eval()
    x, sigma, _ = inputs(3)
    close(net(x, sigma), net(x, sigma, torch.zeros(3, 3)))
    # and the labels do matter
    assert (net(x, sigma, torch.eye(3)) - net(x, sigma)).abs().max() > 1e-3


def test_sigma_shapes_agree():
    net = randomize_gains(tiny()).eval()
    x, _, labels = inputs(2)
    ref = net(x, torch.tensor([0.8, 0.8]), labels)
    close(net(x, torch.tensor(0.8), labels), ref)
    close(net(x, torch.full((2, 1, 1, 1), 0.8), labels), ref)
    close(net(x, 0.8, labels), ref)
    _, logvar = net(x, torch.tensor(0.8), labels, return_logvar=True)
    assert logvar.shape == (2, 1, 1, 1)


def test_float16_stored_weights_run_in_fp32_on_cpu():
    # Released checkpoints store the network in float16; on the CPU the computation is fp32 regardless.
    src = randomize_gains(tiny()).eval()
    half_sd = {k: v.half() for k, v in src.state_dict().items()}
    fp32_net = tiny(seed=9).eval()
    fp32_net.load_state_dict(half_sd, strict=True)
    half_net = tiny(seed=9).half().eval()
    half_net.load_state_dict(half_sd, strict=True)
    assert half_net.unet.out_conv.weight.dtype == torch.float16
    x, sigma, labels = inputs(2)
    D_half = half_net(x, sigma, labels, force_fp32=False)
    assert D_half.dtype == torch.float32
    close(D_half, fp32_net(x, sigma, labels))


# ---------------------------------------------------------------------------------------------------
# Preconditioning and the logvar head.

@pytest.mark.parametrize("sigma_data", [0.5, 0.7])
def test_preconditioning_coefficients(monkeypatch, sigma_data):
    net = tiny(sigma_data=sigma_data).eval()
    seen = {}

    def fake_unet(x_in, noise_labels, class_labels, return_logits=False):
        seen.update(x_in=x_in, noise_labels=noise_labels, class_labels=class_labels)
        return torch.full_like(x_in, 0.3)

    monkeypatch.setattr(net.unet, "forward", fake_unet)
    x, _, labels = inputs(2)
    sigma = torch.tensor([0.02, 3.0])
    D = net(x, sigma, labels)
    s, sd = sigma.reshape(-1, 1, 1, 1).double(), sigma_data
    c_skip = sd ** 2 / (s ** 2 + sd ** 2)
    c_out = s * sd / (s ** 2 + sd ** 2).sqrt()
    c_in = 1 / (s ** 2 + sd ** 2).sqrt()
    close(D.double(), c_skip * x.double() + c_out * 0.3)
    close(seen["x_in"].double(), c_in * x.double())
    close(seen["noise_labels"].double(), sigma.double().log() / 4)
    close(seen["class_labels"], labels)


def test_logvar_head():
    net = randomize_gains(tiny()).eval()
    x, sigma, labels = inputs(3)
    D, logvar = net(x, sigma, labels, return_logvar=True)
    close(D, net(x, sigma, labels))
    assert logvar.shape == (3, 1, 1, 1) and logvar.dtype == torch.float32
    # logvar = logvar_linear(MPFourier(ln(sigma)/4)), recomputed from the buffers and the weight
    c_noise = sigma.log() / 4
    feats = math.sqrt(2) * torch.cos(c_noise[:, None] * net.logvar_fourier.freqs + net.logvar_fourier.phases)
    w = net.logvar_linear.weight.detach()
    w = w / (w.norm(dim=1, keepdim=True) + 1e-4 * math.sqrt(w.shape[1]))
    close(logvar.flatten(), (feats @ w.t()).flatten())


# ---------------------------------------------------------------------------------------------------
# SiDA's discriminator logits: channel mean of the last encoder block's output.

def test_logits_are_channel_mean_of_last_encoder_block():
    net = randomize_gains(tiny()).eval()
    x, sigma, labels = inputs(2)
    captured = []
    last = list(net.unet.enc.values())[-1]
    handle = last.register_forward_hook(lambda mod, args, out: captured.append(out.detach().clone()))
    D_plain = net(x, sigma, labels)
    D, logits = net(x, sigma, labels, return_logits=True)
    handle.remove()
    assert logits.shape == (2, 1, 4, 4) and logits.dtype == torch.float32
    close(D, D_plain)
    close(logits, captured[-1].mean(dim=1, keepdim=True))
    D2, logvar, logits2 = net(x, sigma, labels, return_logvar=True, return_logits=True)
    close(D2, D_plain)
    close(logits2, logits)
    assert logvar.shape == (2, 1, 1, 1)


def test_encoder_only_logits_skip_the_decoder():
    net = randomize_gains(tiny()).eval()
    x, sigma, labels = inputs(2)
    _, ref = net(x, sigma, labels, return_logits=True)
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in [*net.unet.dec.values(), net.unet.out_conv]]
    logits = net.logits(x, sigma, labels)
    for h in hooks:
        h.remove()
    assert calls == []
    close(logits, ref)
    # no c_skip/c_out: scaling x and sigma together changes c_in x not at all
    close(net.logits(x * 2, sigma * 2, labels),
          net.unet.encoder_logits(x * 2 / (4 * sigma ** 2 + 0.25).sqrt().reshape(-1, 1, 1, 1),
                                  (2 * sigma).log() / 4, labels))


@pytest.mark.parametrize("label_dim", [3, 0])
def test_gradients_reach_x_through_logits(label_dim):
    net = randomize_gains(tiny(label_dim=label_dim)).train()
    net.set_force_normalization(False)
    x, sigma, labels = inputs(2, label_dim)
    x.requires_grad_(True)
    net.logits(x, sigma, labels).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert net.unet.dec["4x4_in0"].conv_res0.weight.grad is None
    assert net.unet.enc["4x4_block0"].conv_res0.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# Forced weight normalisation.

def _scaled_weights(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, MPConv):
                m.weight.mul_(3.0)
    return {k: v.detach().clone() for k, v in net.named_parameters() if k.endswith(".weight")}


def test_forced_weight_normalization_on_by_default():
    net = randomize_gains(tiny())
    assert net.force_normalization is True
    before = _scaled_weights(net)
    x, sigma, labels = inputs(2)
    D_eval = net.eval()(x, sigma, labels)
    for k, v in net.named_parameters():  # eval mode never touches weights
        if k in before:
            assert torch.equal(v, before[k]), k
    D_train, _ = net.train()(x, sigma, labels, return_logvar=True)  # also runs the logvar head
    # effective weights are normalised either way; renormalising a unit-norm weight moves it by ~eps = 1e-4
    close(D_train, D_eval, rtol=1e-3, atol=1e-3)
    for k, v in net.named_parameters():
        if k in before:
            rms = v.detach().flatten(1).square().mean(1).sqrt()
            close(rms, torch.ones_like(rms), rtol=0, atol=1e-3)
            assert not torch.allclose(v, before[k])


def test_forced_weight_normalization_off_leaves_weights():
    net = randomize_gains(tiny())
    assert net.set_force_normalization(False) is net
    assert net.force_normalization is False
    assert all(not m.force_normalization for m in net.modules() if isinstance(m, MPConv))
    before = _scaled_weights(net)
    x, sigma, labels = inputs(2)
    D_eval = net.eval()(x, sigma, labels)
    D_train = net.train()(x, sigma, labels)
    close(D_train, D_eval)
    for k, v in net.named_parameters():
        if k in before:
            assert torch.equal(v, before[k]), k
    net.force_normalization = True
    assert all(m.force_normalization for m in net.modules() if isinstance(m, MPConv))
    assert "force_normalization" not in " ".join(net.state_dict())


def test_two_training_calls_in_one_graph_need_forced_normalization_off():
    # The in-place renormalisation bumps the weights' version counters, which invalidates an earlier graph.
    x, sigma, labels = inputs(2)
    net = randomize_gains(tiny()).train()
    loss = net(x, sigma, labels).sum() + net(x, sigma * 2, labels).sum()
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    net = randomize_gains(tiny()).train().set_force_normalization(False)
    loss = net(x, sigma, labels).sum() + net(x, sigma * 2, labels).sum()
    loss.backward()
    assert net.unet.out_conv.weight.grad.abs().sum() > 0
