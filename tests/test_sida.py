"""SiDA (Zhou et al. 2025): the discriminator logit of every EDM architecture and both steps' terms, against
independent computations of the official formulas on given sigma and noise draws."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from full.method import losses
from full.store.network_file import build_network

ARCHS = {  # EDM's train.py settings at toy size
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1]),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1]),
    "adm": dict(model_type="DhariwalUNet"),
}


def net_of(arch, label_dim=3, seed=0, precond="EDMPrecond"):
    torch.manual_seed(seed)
    net = build_network(precond, img_resolution=8, img_channels=2, label_dim=label_dim, model_channels=16,
                        channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], augment_dim=9, dropout=0.0,
                        **ARCHS[arch])
    with torch.no_grad():  # leave the zero-initialised layers
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def last_encoder_output(net, x, sigma, labels, **kw):
    """Independent route to the logit: a forward hook on the last encoder block during a plain call."""
    seen = []
    last = list(net.model.enc.values())[-1]
    handle = last.register_forward_hook(lambda m, args, out: seen.append(out))
    D = net(x, sigma, labels, **kw)
    handle.remove()
    return D, seen[-1].mean(dim=1, keepdim=True)


@pytest.mark.parametrize("arch, precond", [("ddpmpp", "EDMPrecond"), ("ncsnpp", "EDMPrecond"), ("adm", "EDMPrecond"),
                                            ("adm", "iDDPMPrecond"), ("ddpmpp", "VPPrecond")])
def test_discriminator_logit_is_the_channel_mean_of_the_last_encoder_block(arch, precond):
    net = net_of(arch, precond=precond)
    keys_before = list(net.state_dict())
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(3, 2, 8, 8, generator=g), torch.eye(3)
    sigma, aug = torch.tensor([0.3, 1.0, 7.0]), torch.randn(3, 9, generator=g)
    kw = {} if arch == "adm" else {"augment_labels": aug}
    D_ref, logit_ref = last_encoder_output(net, x, sigma, labels, **kw)
    D, logits = net(x, sigma, labels, return_logits=True, **kw)
    only = net.logits(x, sigma, labels, **kw)
    assert logits.shape == (3, 1, 4, 4) and only.shape == (3, 1, 4, 4)
    torch.testing.assert_close(D, D_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, logit_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(only, logit_ref, rtol=1e-5, atol=1e-5)
    assert list(net.state_dict()) == keys_before
    # The logit sees sigma and the labels (the same embeddings as the denoiser).
    assert not torch.allclose(net.logits(x, sigma.flip(0), labels, **kw), only)
    assert not torch.allclose(net.logits(x, sigma, labels.roll(1, 0), **kw), only)
    xg = x.clone().requires_grad_(True)
    net.logits(xg, sigma, labels, **kw).sum().backward()
    assert xg.grad.abs().sum() > 0


def bce(logits, target):
    """BCE with logits, written out: -[t log s(l) + (1 - t) log(1 - s(l))], averaged over everything."""
    p = torch.sigmoid(logits.double())
    return -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).mean()


def draws(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    x_g, real = torch.randn(n, 2, 8, 8, generator=g) * 0.5, torch.randn(n, 2, 8, 8, generator=g) * 0.5
    sigma = torch.exp(torch.randn(n, generator=g) * 1.2 - 1.2)
    noise = torch.randn(n, 2, 8, 8, generator=g)
    return x_g, real, sigma, noise


def test_fake_score_terms_equal_the_official_formulas():
    f = net_of("ddpmpp", label_dim=0)
    x_g, real, sigma, noise = draws()
    lsd = 3.0
    got = losses.DenoisingWithDiscriminator(discriminator_weight=lsd)(f, x_g, sigma, noise, real=real)
    s = sigma.reshape(-1, 1, 1, 1)
    weight = (sigma ** 2 + 0.25) / (0.5 * sigma) ** 2
    D_fake, logit_fake = f(x_g + s * noise, s, return_logits=True)
    logit_real = f.logits(real + s * noise, s)  # the same sigma and the same noise for both batches
    denoise = weight * ((D_fake - x_g) ** 2).sum((1, 2, 3))
    disc = weight * (bce(logit_real, 1.0) + bce(logit_fake, 0.0)).float() / 2  # BCE: a mean over the whole batch
    torch.testing.assert_close(got["denoise"], denoise, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["discriminator"], disc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["loss"], denoise + lsd * disc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["bce_real"], bce(logit_real, 1.0).float().expand(4), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["accuracy_real"], (logit_real > 0).float().mean((1, 2, 3)))
    torch.testing.assert_close(got["accuracy_fake"], (logit_fake < 0).float().mean((1, 2, 3)))
    # The denoising term alone is EDM's loss, as in SiD.
    torch.testing.assert_close(got["denoise"], losses.DenoisingLoss()(f, x_g, sigma, noise)["loss"])


@pytest.mark.parametrize("active", [True, False])
def test_generator_terms_equal_the_official_formulas(active):
    f_phi, f_psi = net_of("ddpmpp", label_dim=0, seed=1), net_of("ddpmpp", label_dim=0, seed=2)
    x_g, _, sigma, noise = draws(seed=3)
    sigma = sigma * 3
    objective = losses.SiDA(alpha=1.0, gan_weight=0.01 / 100).at(300_000 if active else 100_000)
    assert objective.gan_active is active
    got = objective(f_phi, f_psi, x_g, sigma, noise)
    s = sigma.reshape(-1, 1, 1, 1)
    x_t = x_g + s * noise
    y_r = f_phi(x_t, s)
    y_f, y_D = f_psi(x_t, s, return_logits=True)
    w = (x_g - y_r).abs().mean((1, 2, 3)).clamp_min(1e-5)
    sid = ((y_r - y_f) * ((y_r - x_g) - 1.0 * (y_r - y_f))).sum((1, 2, 3)) / w
    gan = bce(y_D.clamp(-10, 10), 1.0).float() / w
    # official: 0.5 lsg/B sum(SiD) + 0.5 lsg_gan/B sum(GAN * C H W); ours is that divided by lsg/B
    expected = 0.5 * sid + 0.5 * (0.01 / 100) * (2 * 8 * 8) * gan if active else sid
    torch.testing.assert_close(got["sid"], sid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["gan"], gan, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["loss"], expected, rtol=1e-5, atol=1e-5)
    assert set(got) == {"loss", "L1", "L2", "sid", "gan"}


def test_sida_gradient_reaches_x_g_through_both_networks_and_the_logit():
    """d loss / d x_g by autograd equals central differences of the whole objective (normaliser held fixed), and
    differs from the gradient without the logit's path."""
    f_phi, f_psi = net_of("adm", label_dim=0, seed=4), net_of("adm", label_dim=0, seed=5)
    x_g, _, sigma, noise = draws(seed=6, n=2)
    objective = losses.SiDA(alpha=1.0, gan_weight=0.05)
    s = sigma.reshape(-1, 1, 1, 1)
    w = losses.sid_normaliser(x_g, f_phi(x_g + s * noise, s))

    def total(v, logit_path=True):
        y_f, y_D = f_psi(v + s * noise, s, return_logits=True)
        d = losses.Denoised(v, f_phi(v + s * noise, s), y_f, y_D if logit_path else y_D.detach())
        return (objective.terms(d)["loss"] / w).sum().double()

    x = x_g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(f_phi, f_psi, x, sigma, noise)["loss"].sum(), x)
    x2 = x_g.clone().requires_grad_(True)
    (without_logit,) = torch.autograd.grad(total(x2, logit_path=False), x2)
    for seed in range(2):
        v = torch.randn(x_g.shape, generator=torch.Generator().manual_seed(seed))
        eps = 1e-2
        fd = ((total(x_g + eps * v) - total(x_g - eps * v)) / (2 * eps)).item()
        assert (grad * v).sum().item() == pytest.approx(fd, rel=3e-2, abs=1e-4)
    assert (grad - without_logit).abs().max() > 1e-4 * grad.abs().max()
    assert math.isfinite(grad.abs().sum().item())


# ----------------------------------------------------------------------------- the trainer with real data


@pytest.fixture()
def tiny_data(tmp_path):
    """24 random 8x8 gray 'images' with 3 labels, as an EDM dataset zip."""
    from full.store.dataset_zip import write_dataset
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.zip"
    write_dataset(path, rng.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 24))
    return str(path)


def sida_trainer(data_path, label_dim=3, **overrides):
    from full import distributed
    from full.method.presets import SiDConfig
    from full.method.sid import SiDTrainer
    from full.store.dataset_zip import ImageZipDataset
    from tiny import tiny_teacher
    config = SiDConfig(**{"objective": "sida", "alpha": 1.0, "batch": 4, "batch_gpu": 2, "dropout": 0.0,
                          "lr": 1e-3, "glr": 1e-3, "lsd": 1.0, "lsg_gan": 0.01, "gan_after_kimg": 0.008,
                          "g_after_kimg": 0.004, "psi_grad_clip": 1.0, **overrides})
    return SiDTrainer(config, tiny_teacher(label_dim=label_dim), distributed.Ranks(0, 1, torch.device("cpu")),
                      data=ImageZipDataset(data_path))


def test_sida_trainer_head_start_gan_schedule_and_logged_terms(tiny_data):
    t = sida_trainer(tiny_data)
    g_before = [p.clone() for p in t.G.parameters()]
    first = t.iteration_step()  # nimg 0 < 4: G waits for the fake score's head start
    assert first.generator is None and all(torch.equal(a, b) for a, b in zip(g_before, t.G.parameters()))
    assert {"denoise", "discriminator", "bce_real", "bce_fake", "accuracy_real", "accuracy_fake"} <= set(first.fake.sums)
    second = t.iteration_step()  # nimg 4: G moves, the GAN term is computed but not yet in the loss
    assert second.generator is not None and not t.objective.at(4).gan_active
    assert second.generator.means()["loss"] == pytest.approx(second.generator.means()["sid"], rel=1e-5)
    t.iteration_step()
    fourth = t.iteration_step()  # nimg 12 > 8: the GAN term has joined
    means = fourth.generator.means()
    assert t.objective.at(12).gan_active
    assert means["loss"] == pytest.approx(0.5 * means["sid"] + 0.5 * 1e-4 * 64 * means["gan"], rel=1e-4)


def test_generator_labels_come_from_the_real_batch(tiny_data):
    t = sida_trainer(tiny_data)
    rng = t.rng("fake", 0)
    d = t.draw("fake", rng)
    rng = t.rng("fake", 0)
    torch.randn((2, 1, 8, 8), generator=rng)  # the latents come first
    idx = torch.randint(len(t.data), (2,), generator=rng)
    images, labels = t.data.batch(idx)
    torch.testing.assert_close(d.labels, labels)
    torch.testing.assert_close(d.real, images.float() / 127.5 - 1)
    g = t.draw("generator", t.rng("generator", 0))
    assert g.real is None and g.labels is not None  # the G step reads labels only


def test_sida_without_data_or_with_a_mismatched_dataset_is_refused(tiny_data):
    from full import distributed
    from full.errors import ConfigError, SidError
    from full.method.presets import SiDConfig
    from full.method.sid import SiDTrainer
    from full.store.dataset_zip import ImageZipDataset
    from tiny import tiny_teacher
    with pytest.raises(ConfigError, match="needs real images: pass --data"):
        SiDTrainer(SiDConfig(objective="sida", batch=2), tiny_teacher(), distributed.Ranks(0, 1, torch.device("cpu")))
    with pytest.raises(SidError, match="holds 8x8 gray images with 3 labels, but the teacher is 16x16"):
        ImageZipDataset(tiny_data).check_matches(16, 1, 3, what="--data")


# ----------------------------------------------------------------------------- EDM2 networks: the logvar weighting


def edm2_net(seed=0):
    from full.nets.edm2 import EDM2Precond
    torch.manual_seed(seed)
    net = EDM2Precond(img_resolution=8, img_channels=2, label_dim=0, use_fp16=False, model_channels=16,
                      channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_edm2_denoising_loss_is_uncertainty_weighted():
    """EDM2Loss: per entry lambda(sigma) / exp(logvar) (D - y)^2 + logvar, summed over a sample's entries."""
    f = edm2_net()
    x_g, real, sigma, noise = draws(seed=7)
    got = losses.DenoisingLoss(P_mean=-0.4, P_std=1.0, uses_logvar=True)(f, x_g, sigma, noise)["loss"]
    s = sigma.reshape(-1, 1, 1, 1)
    D, logvar = f(x_g + s * noise, s, return_logvar=True)
    weight = (s ** 2 + 0.25) / (0.5 * s) ** 2
    expected = ((weight / logvar.exp()) * (D - x_g) ** 2 + logvar).sum((1, 2, 3))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # SiDA-EDM2's fake-score objective: both terms divided by exp(logvar).
    both = losses.DenoisingWithDiscriminator(uses_logvar=True, discriminator_weight=100.0)(f, x_g, sigma, noise,
                                                                                           real=real)
    D, logvar, logit_fake = f(x_g + s * noise, s, return_logvar=True, return_logits=True)
    logit_real = f.logits(real + s * noise, s)
    disc = weight.flatten() * (bce(logit_real, 1.0) + bce(logit_fake, 0.0)).float() / 2 / logvar.flatten().exp()
    torch.testing.assert_close(both["denoise"], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(both["discriminator"], disc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both["loss"], expected + 100.0 * disc, rtol=1e-5, atol=1e-3)


def test_sida_edm2_divides_both_generator_terms_by_exp_logvar():
    f_phi, f_psi = edm2_net(1), edm2_net(2)
    x_g, _, sigma, noise = draws(seed=8)
    objective = losses.generator_objective("sida", logvar=True, alpha=1.0, gan_weight=1e-4).at(10 ** 6)
    got = objective(f_phi, f_psi, x_g, sigma, noise)
    plain = losses.SiDA(alpha=1.0, gan_weight=1e-4).at(10 ** 6)(f_phi, f_psi, x_g, sigma, noise)
    _, logvar = f_psi(x_g + sigma.reshape(-1, 1, 1, 1) * noise, sigma, return_logvar=True)
    for name in ("sid", "gan", "loss"):
        torch.testing.assert_close(got[name], plain[name] / logvar.flatten().exp(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["sid", "sida"])
def test_sid_and_sida_train_an_edm2_teacher_with_forced_weight_normalisation(tmp_path, objective):
    from full import distributed
    from full.method.presets import SiDConfig
    from full.method.sid import SiDTrainer
    from full.nets.edm2 import normalize
    from full.store.dataset_zip import ImageZipDataset, write_dataset
    rng = np.random.default_rng(0)
    from full.nets.edm2 import EDM2Precond
    write_dataset(tmp_path / "d.zip", rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8))
    data = ImageZipDataset(tmp_path / "d.zip") if objective == "sida" else None
    torch.manual_seed(0)
    teacher = EDM2Precond(img_resolution=8, img_channels=3, label_dim=0, use_fp16=False, model_channels=16,
                          channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4]).eval()
    config = SiDConfig(objective=objective, batch=4, batch_gpu=2, dropout=0.0, lr=1e-3, glr=1e-3, alpha=1.0,
                       p_mean=-0.4, p_std=1.0, gan_after_kimg=0, g_after_kimg=0)
    t = SiDTrainer(config, teacher, distributed.Ranks(0, 1, torch.device("cpu")), data=data)
    assert t.fake_objective.uses_logvar and t.objective.needs_logvar
    plain = SiDTrainer(dataclasses.replace(config, return_logvar=False), teacher,
                       distributed.Ranks(0, 1, torch.device("cpu")), data=data)   # EDM2's s recipe: no logvar
    assert not plain.fake_objective.uses_logvar and not plain.objective.needs_logvar
    for _ in range(2):
        stats = t.iteration_step()
        assert stats.fake.dropped == 0 and stats.generator.dropped == 0
    assert ("discriminator" in stats.fake.sums) == (objective == "sida")
    t.G.train()
    t._renormalise(t.G)  # forced normalisation keeps every stored weight at unit norm per output channel
    for name, p in t.G.named_parameters():
        if p.ndim > 1 and "unet" in name:
            torch.testing.assert_close(p, normalize(p), rtol=1e-4, atol=1e-5)
