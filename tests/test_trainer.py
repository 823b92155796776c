"""The SiD trainer on tiny EDM networks (CPU): which networks move, the order of the steps, exact gradients,
non-finite samples, dropout, mixed precision and the training loop's records."""
import copy
import math
import time

import pytest
import torch

from full import distributed
from full.method.loop import Diverged, training_loop
from full.method.presets import SiDConfig
from full.method.records import Progress, Tick
from full.method.sid import SiDTrainer, dropout_of
from tiny import tiny_teacher

CPU = distributed.Ranks(0, 1, torch.device("cpu"))


def trainer(teacher=None, **overrides):
    config = SiDConfig(**{"batch": 4, "batch_gpu": 2, "dropout": 0.0, "lr": 1e-3, "glr": 1e-3, **overrides})
    return SiDTrainer(config, teacher or tiny_teacher(), CPU)


def test_teacher_is_frozen_and_updates_touch_the_right_networks():
    t = trainer()
    before = {k: v.clone() for k, v in t.f_phi.state_dict().items()}
    g_before = [p.clone() for p in t.G.parameters()]
    psi_before = [p.clone() for p in t.f_psi.parameters()]
    t.fake_step()
    assert all(p.grad is None for p in t.G.parameters()), "the f_psi step must use detached generator samples"
    assert all(torch.equal(a, b) for a, b in zip(g_before, t.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(psi_before, t.f_psi.parameters()))
    psi_after = [p.clone() for p in t.f_psi.parameters()]
    t.generator_step()
    assert all(p.grad is None for p in t.f_psi.parameters()) and all(p.grad is None for p in t.f_phi.parameters())
    assert all(torch.equal(a, b) for a, b in zip(psi_after, t.f_psi.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, t.G.parameters()))
    for _ in range(2):
        t.iteration_step()
    assert all(torch.equal(before[k], v) for k, v in t.f_phi.state_dict().items())
    assert t.iteration == 2 and t.nimg == 8


def test_iteration_runs_fake_then_generator_then_ema(monkeypatch):
    t, order = trainer(), []
    for name in ("fake_step", "generator_step", "ema_step"):
        original = getattr(t, name)
        monkeypatch.setattr(t, name, lambda original=original, name=name: (order.append(name), original())[1])
    t.iteration_step()
    assert order == ["fake_step", "generator_step", "ema_step"]


def test_generator_gradient_through_denoiser_inputs_matches_finite_differences():
    """Directional derivatives of the SiD loss through tiny EDM networks (which compute in fp32):
    autograd against central differences, and against the gradient with the denoisers held fixed."""
    from full.method.losses import Denoised, SiD, sid_normaliser
    f_phi, f_psi = tiny_teacher(seed=1), tiny_teacher(seed=2)
    x_g = torch.randn(2, 1, 8, 8)
    sigma, noise = torch.tensor([0.7, 1.5]), torch.randn_like(x_g)
    x = x_g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(SiD(1.2)(f_phi, f_psi, x, sigma, noise)["loss"].sum(), x)
    s = sigma.reshape(-1, 1, 1, 1)
    w = sid_normaliser(x_g, f_phi(x_g + s * noise, s))
    loss = lambda v: (SiD(1.2).terms(Denoised(v, f_phi(v + s * noise, s), f_psi(v + s * noise, s)))["loss"]  # noqa: E731
                      / w).sum().double()
    y_r, y_f = f_phi(x_g + s * noise, s), f_psi(x_g + s * noise, s)
    outputs_fixed = ((y_r - y_f) * (-1) / w.reshape(-1, 1, 1, 1))  # d/dx_g with y_r, y_f held fixed
    for seed in range(3):
        v = torch.randn(x_g.shape, generator=torch.Generator().manual_seed(seed))
        eps = 1e-2
        fd = ((loss(x_g + eps * v) - loss(x_g - eps * v)) / (2 * eps)).item()
        assert (grad * v).sum().item() == pytest.approx(fd, rel=2e-2, abs=1e-4)
        assert abs((outputs_fixed * v).sum().item() - fd) > 0.1 * abs(fd) + 1e-3


def test_toy_and_full_share_the_loss_objects():
    import full.method.sid
    import toy.distill
    assert full.method.sid.generator_objective is toy.distill.generator_objective
    assert full.method.sid.DenoisingLoss is toy.distill.DenoisingLoss


# ----------------------------------------------------------------------------- non-finite samples


def capture_gradients(t, monkeypatch):
    """Make `_finish` record the summed gradients instead of stepping."""
    captured = {}

    def finish(net, opt, scaler, grad_clip):
        captured["net"] = net
        captured["grads"] = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
        opt.zero_grad(set_to_none=True)
        return 0
    monkeypatch.setattr(t, "_finish", finish)
    return captured


def poison(t, phase, bad):
    """Make sample(s) `bad` of every chunk's latents NaN in `phase` (None: both steps); x_g is then NaN for those
    samples only."""
    draw = t.draw

    def poisoned(phase_, rng):
        d = draw(phase_, rng)
        if phase in (None, phase_):
            d.z[bad] = float("nan")
        return d
    t.draw = poisoned


@pytest.mark.parametrize("phase", ["fake", "generator"])
def test_gradient_with_one_bad_sample_equals_the_gradient_of_the_batch_without_it(phase, monkeypatch):
    t = trainer(batch=4, batch_gpu=4)
    step = t.fake_step if phase == "fake" else t.generator_step
    terms_of = t.fake_terms if phase == "fake" else t.generator_terms
    net, scale = (t.f_psi, t.config.ls) if phase == "fake" else (t.G, t.config.lsg)
    poison(t, phase, bad=1)
    captured = capture_gradients(t, monkeypatch)
    stats = step()
    assert stats.dropped == 1 and stats.kept == 3
    got = captured["grads"]
    assert all(g is not None and torch.isfinite(g).all() for g in got)
    # Reference: the same numbers without sample 1, through the same objective, on a fresh copy.
    ref = trainer(batch=4, batch_gpu=4)
    draws = ref.draw(phase, ref.rng(phase, 0)).subset(torch.tensor([0, 2, 3]))
    (ref.f_psi if phase == "fake" else ref.G).train()
    if phase == "generator":
        ref.f_psi.requires_grad_(False)
    torch.manual_seed(ref.rng(phase, 0).initial_seed())
    (terms_of.__func__(ref, draws)["loss"].sum() * scale / 4).backward()
    expected = [p.grad for p in (ref.f_psi if phase == "fake" else ref.G).parameters()]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)
    assert captured["net"] is net


def test_non_finite_gradients_are_counted_and_repaired():
    t = trainer()
    p = next(t.G.parameters())
    before = p.detach().clone()
    p.grad = torch.zeros_like(p)
    p.grad.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 1.0])
    bad = t._finish(t.G, t.opt_G, t.scalers["generator"], 0.0)
    assert bad == 2 and torch.isfinite(p).all() and not torch.equal(p, before)
    p.grad = torch.ones_like(p)
    assert t._finish(t.G, t.opt_G, t.scalers["generator"], 0.0) == 0


def test_a_run_whose_samples_are_all_non_finite_stops_with_a_clear_error():
    t = trainer()
    poison(t, None, slice(None))
    records = []
    with pytest.raises(Diverged, match="non-finite for 3 consecutive iterations.*--nan-patience 3"):
        for record in training_loop(t, total_iterations=20, tick_iterations=5, nan_patience=3):
            records.append(record)
    assert [r.iteration for r in records if isinstance(r, Progress)] == [1, 2]


def _iteration_on_two_ranks(rank, init_file, out_file):
    """One iteration on rank `rank` of two (gloo); rank 1's samples are all non-finite in both steps."""
    import json
    import torch.distributed as dist
    torch.set_num_threads(1)  # two processes share the cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        t = SiDTrainer(SiDConfig(batch=4, batch_gpu=2, dropout=0.0), tiny_teacher(),
                       distributed.Ranks(rank, 2, torch.device("cpu")))
        if rank == 1:
            poison(t, None, slice(None))
        stats = t.iteration_step()
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump({step: [s.kept, s.dropped, s.sums, s.means()]
                           for step, s in (("fake", stats.fake), ("generator", stats.generator))}, f)
    finally:
        dist.destroy_process_group()


def test_a_rank_that_drops_every_sample_still_sums_every_term_with_the_others(tmp_path):
    """The statistics are summed over ranks in one tensor, so every rank must name the same terms, also one
    that kept no sample: its sums are zero and the others' means are over their samples alone."""
    import json
    import torch.multiprocessing as mp
    out = tmp_path / "stats.json"
    ranks = mp.spawn(_iteration_on_two_ranks, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the two ranks hang: their statistics tensors differ in length")
    stats = json.loads(out.read_text())
    # The fake step's terms are rank 0's alone: chunk 0 of the same seed, as a one-rank batch of 2 draws it.
    alone = trainer(batch=2, batch_gpu=2).iteration_step()
    for step, expected in (("fake", alone.fake), ("generator", alone.generator)):
        kept, dropped, sums, means = stats[step]
        assert (kept, dropped) == (2, 2)
        assert set(sums) == set(expected.sums) and set(means) == set(sums)
        for name in sums:
            assert means[name] == pytest.approx(sums[name] / 2)
            if step == "fake":
                assert sums[name] == pytest.approx(expected.sums[name], rel=1e-5, abs=1e-6)

# ----------------------------------------------------------------------------- the loop's records


def test_loop_yields_progress_every_iteration_and_ticks_with_named_terms():
    t = trainer()
    records = list(training_loop(t, total_iterations=5, tick_iterations=2))
    progress = [r for r in records if isinstance(r, Progress)]
    ticks = [r for r in records if isinstance(r, Tick)]
    assert [p.iteration for p in progress] == [1, 2, 3, 4, 5] and progress[-1].total_iterations == 5
    assert [k.iteration for k in ticks] == [2, 4, 5] and [k.tick for k in ticks] == [1, 2, 3]
    assert set(ticks[0].fake) == {"loss"} and set(ticks[0].generator) == {"loss", "L1", "L2"}
    for k in ticks:  # the logged total is L2 - alpha L1 of the logged parts (means of per-sample terms)
        assert k.generator["loss"] == pytest.approx(k.generator["L2"] - 1.2 * k.generator["L1"], rel=1e-4, abs=1e-6)
        assert k.sec_per_kimg == pytest.approx(k.sec_per_iter / (4 / 1000)) and k.nan_samples == 0


def test_should_stop_is_honoured_between_iterations():
    t = trainer()
    records = list(training_loop(t, total_iterations=10, tick_iterations=3, should_stop=lambda: t.iteration >= 4))
    assert t.iteration == 4 and records[-1].iteration == 4


# ----------------------------------------------------------------------------- dropout and precision


def test_configured_dropout_reaches_G_and_f_psi_but_not_the_teacher():
    t = trainer(teacher=tiny_teacher(dropout=0.0), dropout=0.3)
    assert dropout_of(t.G) == {0.3} and dropout_of(t.f_psi) == {0.3} and dropout_of(t.f_phi) == {0.0}
    x, sigma = torch.randn(2, 1, 8, 8), torch.full((2,), 1.0)
    t.G.train()
    torch.manual_seed(0)
    a = t.G(x, sigma)
    torch.manual_seed(1)
    assert not torch.allclose(a, t.G(x, sigma)), "dropout must change training-mode outputs"
    t.G.eval()
    torch.testing.assert_close(t.G(x, sigma), t.G(x, sigma))
    t0 = trainer(teacher=tiny_teacher(dropout=0.2), dropout=0.0)
    t0.G.train()
    torch.manual_seed(0)
    b = t0.G(x, sigma)
    torch.manual_seed(1)
    torch.testing.assert_close(b, t0.G(x, sigma))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_on_the_cpu_and_resumes(precision):
    t = trainer(precision=precision)
    assert t.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    for _ in range(3):
        stats = t.iteration_step()
        assert math.isfinite(stats.fake.means()["loss"]) and math.isfinite(stats.generator.means()["loss"])
    assert all(p.dtype == torch.float32 for p in t.G_ema.parameters())  # snapshots stay fp32
    state = copy.deepcopy(t.state_dict())  # as torch.load would give it: no tensor shared with `t`
    if precision == "fp16":
        assert t.scalers["fake"].is_enabled() and state["scalers"]["fake"]["scale"] > 0
    again = trainer(precision=precision)
    again.load_state_dict(state)
    assert again.scalers["generator"].state_dict() == t.scalers["generator"].state_dict()
    a, b = t.iteration_step(), again.iteration_step()
    assert a.generator.sums == b.generator.sums
    assert all(torch.equal(p, q) for p, q in zip(t.G.parameters(), again.G.parameters()))


@pytest.mark.slow
def test_real_size_cifar10_ddpmpp_completes_one_iteration():
    from full.store.network_file import build_network
    net = build_network("EDMPrecond", img_resolution=32, img_channels=3, label_dim=0, model_type="SongUNet",
                        embedding_type="positional", encoder_type="standard", decoder_type="standard",
                        channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                        augment_dim=9, dropout=0.13)
    assert sum(p.numel() for p in net.parameters()) == 55_733_891
    t = SiDTrainer(SiDConfig(batch=1), net, CPU)
    stats = t.iteration_step()
    assert t.iteration == 1 and stats.generator.dropped == 0 and math.isfinite(stats.generator.means()["loss"])


def test_ema_follows_the_ramp():
    from full.method.ema import ema_beta, ema_update
    assert ema_beta(256, 0, 0.5) == 0.0
    assert ema_beta(256, 10_000, 0.5) == pytest.approx(0.5 ** (256 / 500))
    assert ema_beta(256, 10 ** 9, 0.5) == pytest.approx(0.5 ** (256 / 5e5))
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    old = [p.detach().clone() for p in a.parameters()]
    ema_update(a, b, 0.25)
    for p, o, q in zip(a.parameters(), old, b.parameters()):
        torch.testing.assert_close(p, 0.25 * o + 0.75 * q)


def test_moment_free_adam_equals_torch_adam_with_beta1_zero_and_resumes():
    from full.method.optim import MomentFreeAdam, adam
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 3)), torch.nn.Parameter(torch.randn(4))]
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    opt = adam(ours, 1e-2, 0.0, 1e-8, torch.device("cpu"))
    ref_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.0, 0.999), eps=1e-8)
    assert isinstance(opt, MomentFreeAdam) and isinstance(adam(ref, 1e-2, 0.9, 1e-8, torch.device("cpu")),
                                                          torch.optim.Adam)
    for step in range(6):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
        if step == 2:  # a resumed optimiser continues the same sequence
            again = MomentFreeAdam(ours, lr=1e-2)
            again.load_state_dict(copy.deepcopy(opt.state_dict()))
            opt = again
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert set(opt.state[ours[0]]) == {"step", "exp_avg_sq"}  # no first-moment buffer


def test_a_state_of_another_architecture_is_refused_in_one_line():
    from full.errors import ConfigError
    state = trainer(teacher=tiny_teacher(channels=2)).state_dict()
    with pytest.raises(ConfigError, match="training state's G does not fit this teacher's architecture"):
        trainer().load_state_dict(state)
