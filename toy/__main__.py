"""Command line of the analytic toy: `python -m toy {verify,prop4,distill,bench,alpha} --help`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import ConfigError
from full.options import POSITIVE, Range, add_options, checked, overrides, positive_int


def cmd_verify(args) -> int:
    from toy.verify import format_table, rows_to_json, verification_rows
    rows = verification_rows(n=args.samples, seed=args.seed)
    print(json.dumps(rows_to_json(rows), indent=1) if args.json else format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def cmd_prop4(args) -> int:
    from toy.montecarlo import prop4_gradients_mc
    from toy.proofs import prop4_gradients
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


def cmd_alpha(args) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from toy.alpha_study import (PRESETS, describe_plan, format_table, load_records, run_and_collect, with_overrides,
                                 write_outputs)
    plan = with_overrides(PRESETS["quick" if args.quick else "full"], args.alphas, args.seeds, args.steps)
    if args.dry_run:
        print(describe_plan(plan))
        return 0
    record_file = Path(args.records or Path(args.out) / "alpha_study.records.jsonl")
    previous = load_records(record_file) if args.resume else []
    record_file.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        record_file.write_text("")

    def report(done, total, r):
        reached = "never" if r.steps_to_threshold is None else r.steps_to_threshold
        print(f"  [{done}/{total}] {r.study}={r.value} alpha={r.alpha:g} seed={r.seed}: steps to threshold {reached},"
              f" final {r.final:.4g}" + (" (diverged)" if r.diverged else ""), file=sys.stderr, flush=True)
    doc = run_and_collect(plan, workers=args.workers, progress=None if args.json else report, previous=previous,
                          record_file=record_file)
    json_path, png_path = write_outputs(doc, args.out)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(format_table(doc))
        print(doc["summary"])
        print(f"{doc['cpu_seconds'] / 60:.1f} CPU-minutes, {doc['wall_seconds'] / 60:.1f} minutes of wall time; "
              f"wrote {json_path} and {png_path}")
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
    p.add_argument("--sigma", type=checked(float, POSITIVE), default=1.0, help="noise level sigma_t > 0 (default: 1.0)")
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
    p = sub.add_parser("bench", help="SiD (alpha 0.5/1.0/1.2) vs L1, L2, Diff-Instruct, DMD and SiDA: steps to a "
                                     "distance, final distance, mass off the modes")
    p.add_argument("--settings", nargs="+", default=["mixture", "gaussian"], help="mixture and/or gaussian")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds (default: 0 1)")
    p.add_argument("--steps", type=int, default=None, help="override the generator steps of every setting")
    p.add_argument("--plot", default="runs/bench/toy.png", help="distance curves PNG ('' to skip)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser(
        "alpha", help="how to choose SiD's alpha: sweep alpha across dimension, teacher and f_psi steps per G step",
        description=(
            "Sweep SiD's alpha on toy distillation along three studies, each around one base configuration\n"
            "(MLP generator, fitted MLP fake score, Adam 1e-3, batch 256, 600 G steps):\n"
            "  dimension   four overlapping Gaussians in d = 2, 8, 16, 32, 64 (targets gmm<d>d), exact teacher\n"
            "  teacher     the exact teacher against an MLP denoiser fitted to target samples (64-D)\n"
            "  fake_steps  k = 1, 2, 5 f_psi updates per G update (64-D, exact teacher)\n"
            "at alpha 0, 0.5, 1, 1.2, 1.5 and seeds 0, 1, 2. Each run is scored by the energy distance to exact\n"
            "target samples; the threshold of a setting is 10 x its floor (the distance between two independent\n"
            "target sets). Reports steps to the threshold and the final distance per seed, writes\n"
            "OUT/alpha_study.json and OUT/alpha_study.png, and prints a table and a summary.\n"
            "The full study takes about 20 CPU-minutes (--workers 2 halves the wall time on an idle machine);\n"
            "--quick takes about 20 CPU-seconds. Every run's record is appended to --records as it ends, and\n"
            "--resume reuses them, so an interrupted study goes on where it stopped."))
    p.add_argument("--quick", action="store_true", help="the tiny version (one seed, short runs) for CI and notebooks")
    p.add_argument("--out", default="runs/alpha_study", help="output folder (default: runs/alpha_study; "
                                                              "the committed results are in docs/)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes, one thread each (default: 1)")
    p.add_argument("--alphas", nargs="+", type=checked(float, Range(-10, 10)), default=None, help="override the alphas of the preset")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the seeds of the preset")
    p.add_argument("--steps", type=positive_int, default=None, help="override the generator steps of every run")
    p.add_argument("--records", default=None, help="JSON-lines file that receives every run's record as it ends "
                                                    "(default: OUT/alpha_study.records.jsonl)")
    p.add_argument("--resume", action="store_true", help="reuse the runs already in --records whose configuration "
                                                         "matches (an interrupted study goes on where it stopped)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved settings and the number of runs, and exit")
    p.add_argument("--json", action="store_true", help="print the results document as JSON (no progress lines)")
    p.set_defaults(func=cmd_alpha)
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
