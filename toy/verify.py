"""`python -m toy verify`: every symbolic proof next to its Monte Carlo counterpart, as one table."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from full.method.losses import Denoised, generator_objective
from toy import montecarlo, proofs
from toy.families import Gaussian
from toy.targets import make_target


@dataclass(frozen=True)
class Row:
    name: str
    symbolic: str                 # 'holds' / 'FAILS' for the sympy proof behind the row, '-' if none
    estimate: float | None        # Monte Carlo estimate
    closed_form: float | None
    stderr: float | None
    passed: bool


def _row(name: str, symbolic: bool | None, check: montecarlo.MCCheck | None) -> Row:
    sym = "-" if symbolic is None else ("holds" if symbolic else "FAILS")
    if check is None:
        return Row(name, sym, None, None, None, bool(symbolic))
    ok = check.passes() and symbolic is not False
    return Row(name, sym, check.estimate, check.closed_form, check.stderr, ok)


def two_timescale_drift_mc(theta: float, psi: float, alpha: float, sigma: float, s: float, eta: float,
                           n: int = 200_000, chunks: int = 50, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Monte Carlo drifts of the two-timescale system (`toy.proofs.two_timescale`), by autograd through the shared
    losses: theta' = -E[d/d theta SiD(alpha)] with psi detached, psi' = -eta E[d/d psi |f_psi(x_t) - x_g|^2].

    Data N(0, 1) is the teacher, f_psi the exact denoiser of N(psi, s^2), x_g = theta + s z, x_t = x_g + sigma eps.
    Returns {"theta": (mean, stderr), "psi": (mean, stderr)} over `chunks` independent batches.
    """
    rng = torch.Generator().manual_seed(seed)
    f_phi = Gaussian(torch.zeros(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    sid = generator_objective("sid", alpha=alpha)
    out = {"theta": [], "psi": []}
    for _ in range(chunks):
        z, eps = (torch.randn(n // chunks, 1, generator=rng, dtype=torch.float64) for _ in range(2))
        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        ps = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
        spread = torch.full((1, 1), s ** 2, dtype=torch.float64)
        f_psi, fixed_f_psi = Gaussian(ps.reshape(1), spread), Gaussian(ps.detach().reshape(1), spread)
        x_g = th + s * z
        x_t = x_g + sigma * eps  # G's gradient reaches x_g directly and through both denoisers' input x_t
        generator_loss = sid.terms(Denoised(x_g, f_phi(x_t, sigma), fixed_f_psi(x_t, sigma)))["loss"].mean()
        out["theta"].append(-torch.autograd.grad(generator_loss, th)[0])
        fake_loss = (f_psi(x_t.detach(), sigma) - x_g.detach()).square().sum(1).mean()
        out["psi"].append(-eta * torch.autograd.grad(fake_loss, ps)[0])
    return {name: montecarlo._mean_and_stderr(torch.stack(values)) for name, values in out.items()}


def verification_rows(theta: float = 0.8, sigma: float = 1.3, alpha: float = 1.2, n: int = 200_000,
                      seed: int = 0) -> list[Row]:
    """Run all proofs and Monte Carlo checks (fixed seed) and pair them up."""
    proved = {p.name: p.holds for p in proofs.all_proofs()}
    mixture = make_target("overlap2d").double()
    teacher = make_target("gaussian2d").double()
    generator = Gaussian(torch.tensor([0.2, 0.4], dtype=torch.float64),
                         torch.tensor([[0.6, -0.1], [-0.1, 0.9]], dtype=torch.float64))
    rows = [_row("tweedie", proved.pop("tweedie"), montecarlo.tweedie_check(mixture, sigma, n, seed))]
    left, right = montecarlo.score_projection_checks(mixture, sigma, n, seed)
    projection_holds = proved.pop("score_projection")
    rows += [_row("score_projection (marginal side)", projection_holds, left),
             _row("score_projection (conditional side)", projection_holds, right)]
    rows.append(_row("projected_score_matching", proved.pop("projected_score_matching"),
                     montecarlo.projected_score_matching_check(teacher, generator, sigma, n, seed)))
    prop4_holds = proved.pop("proposition4")
    closed = proofs.prop4_gradients(theta, sigma, alpha)
    for name, (estimate, stderr) in montecarlo.prop4_gradients_mc(theta, sigma, alpha, n, seed=seed).items():
        check = montecarlo.MCCheck(name, estimate, stderr, closed[name])
        rows.append(_row(f"prop4 grad {name} (theta={theta}, sigma={sigma}, alpha={alpha})", prop4_holds, check))
    prop4 = proofs.proposition4()
    for name, rate in prop4.rates.items():
        limit = prop4.limits[name]
        rows.append(Row(f"prop4 flow {name}: theta(tau) -> {limit}, rate at sigma={sigma}",
                        "learns" if prop4.learns[name] else "cannot learn", None,
                        float(rate.subs({s: sigma for s in rate.free_symbols if s.name == "sigma"})), None, prop4_holds))
    system = proofs.two_timescale()
    two_holds = proved.pop("two_timescale")
    point = dict(theta=0.9, psi=-0.4, alpha=alpha, sigma=sigma, s=0.7, eta=0.5)
    drift = proofs.two_timescale_drift(point["alpha"], sigma, point["s"], point["eta"]) @ [point["theta"], point["psi"]]
    for (name, (estimate, stderr)), closed in zip(two_timescale_drift_mc(**point, n=n, seed=seed).items(), drift):
        check = montecarlo.MCCheck(name, estimate, stderr, float(closed))
        rows.append(_row(f"two_timescale d{name}/dtau (" + ", ".join(f"{k}={v}" for k, v in point.items()) + ")",
                         two_holds, check))
    rows.append(Row("two_timescale: alpha absent from A at s=1, present at s!=1", "holds" if two_holds else "FAILS",
                    None, None, None, two_holds and system.alpha_free_at_unit_spread))
    rows.append(Row(f"two_timescale: eta -> oo slow eigenvalue at s=1 = -(prop4 sid rate), sigma={sigma}",
                    "holds" if two_holds else "FAILS", None,
                    float(system.fast_limit.subs({q: v for q in system.fast_limit.free_symbols
                                                  for name, v in (("sigma", sigma), ("s", 1)) if q.name == name})),
                    None, two_holds))
    rows += [_row(name, holds, None) for name, holds in proved.items()]
    return rows


def format_table(rows: list[Row]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.6g}"
    table = [("check", "symbolic", "MC estimate", "closed form", "stderr", "pass")]
    table += [(r.name, r.symbolic, fmt(r.estimate), fmt(r.closed_form), fmt(r.stderr), "yes" if r.passed else "NO")
              for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
