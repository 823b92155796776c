"""Command line of the analytic toy: `python -m toy {verify,prop4,distill} --help`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import ConfigError
from full.options import add_options, overrides


def cmd_verify(args) -> int:
    from toy.verify import format_table, rows_to_json, verification_rows
    rows = verification_rows(n=args.samples, seed=args.seed)
    print(json.dumps(rows_to_json(rows), indent=1) if args.json else format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def cmd_prop4(args) -> int:
    from toy.montecarlo import prop4_gradients_mc
    from toy.proofs import prop4_gradients
    if args.sigma <= 0:
        raise ConfigError(f"--sigma {args.sigma}: must be a finite number > 0")
    closed = prop4_gradients(args.theta, args.sigma, args.alpha)
    mc = prop4_gradients_mc(args.theta, args.sigma, args.alpha, n=args.samples, seed=args.seed)
    result = {name: {"closed_form": closed[name], "monte_carlo": mc[name][0], "stderr": mc[name][1]}
              for name in ("naive", "projected", "sid", "true")}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"Proposition 4 theta-gradients at theta={args.theta}, sigma={args.sigma}, alpha={args.alpha}")
        for name, r in result.items():
            print(f"  {name:10s} closed form {r['closed_form']:+.6f}   Monte Carlo {r['monte_carlo']:+.6f}"
                  f" +- {r['stderr']:.2g}")
    return 0


def cmd_distill(args) -> int:
    from tqdm import tqdm

    from toy.distill import ToyConfig, ToyDistillation
    config = ToyConfig(**overrides(args, ToyConfig))
    run = ToyDistillation(config)
    out = Path(args.out or f"runs/toy/{config.target}-{config.generator}-{config.loss}-a{config.alpha}-s{config.seed}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    last = {}
    with out.open("w") as log, tqdm(total=config.steps, disable=args.json, desc="distill") as bar:
        for record in run:
            row = record.to_json()
            log.write(json.dumps(row) + "\n")
            if args.json:
                print(json.dumps(row), flush=True)
            if record.energy is not None:
                last = {k: v for k, v in row.items() if v is not None}
                bar.set_postfix(loss=f"{record.loss:.3g}", energy=f"{record.energy:.4f}")
            bar.update(1)
    if not args.json:
        print("final:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
        print(f"per-step records: {out}")
    return 0


def cmd_bench(args) -> int:
    from toy.bench import SETTINGS, bench, format_results, plot
    unknown = set(args.settings) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from {', '.join(SETTINGS)}")
    report = None if args.json else (lambda setting, method: print(f"  done: {setting} / {method}", file=sys.stderr))
    results = bench(args.settings, args.seeds, args.steps, progress=report)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
    if args.json:
        for block in results.values():
            for r in block["methods"].values():
                r.pop("curves")
        print(json.dumps(results, indent=1))
    else:
        print(format_results(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from toy.distill import ToyConfig
    parser = ArgumentParser(prog="python -m toy", description=(
        "SiD's identities, Proposition 4's failure case and toy distillation, all with exact scores."))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="run every sympy proof and Monte Carlo check; exit 0 iff all hold")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--samples", type=int, default=200_000, help="Monte Carlo samples per check (default: 200000)")
    p.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default: 0)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("prop4", help="Proposition 4: closed-form and Monte Carlo theta-gradient of each objective")
    p.add_argument("--theta", type=float, default=1.0, help="generator mean theta (default: 1.0)")
    p.add_argument("--sigma", type=float, default=1.0, help="noise level sigma_t > 0 (default: 1.0)")
    p.add_argument("--alpha", type=float, default=1.2, help="SiD's alpha (default: 1.2)")
    p.add_argument("--samples", type=int, default=200_000, help="Monte Carlo samples (default: 200000)")
    p.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default: 0)")
    p.add_argument("--json", action="store_true", help="emit one JSON object keyed naive/projected/sid/true")
    p.set_defaults(func=cmd_prop4)
    p = sub.add_parser("distill", help="toy SiD (or a peer loss) on an exact teacher; writes per-step records")
    add_options(p, ToyConfig)
    p.add_argument("--out", help="JSONL file for the per-step records (default: runs/toy/<run>.jsonl)")
    p.add_argument("--json", action="store_true", help="print every record as a JSON line instead of a progress bar")
    p.set_defaults(func=cmd_distill)
    p = sub.add_parser("bench", help="SiD (alpha 0.5/1.0/1.2) vs L1, L2, Diff-Instruct, DMD: steps to a distance, final distance")
    p.add_argument("--settings", nargs="+", default=["mixture", "gaussian"], help="mixture and/or gaussian")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds (default: 0 1)")
    p.add_argument("--steps", type=int, default=None, help="override the generator steps of every setting")
    p.add_argument("--plot", default="runs/bench/toy.png", help="distance curves PNG ('' to skip)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as error:
        return report_error(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
