"""`python -m toy verify`: every symbolic proof next to its Monte Carlo counterpart, as one table."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

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
