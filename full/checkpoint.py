"""Inspect network files, or convert EDM/SiD pickles to our safetensors + JSON pair.

    python -m full.checkpoint inspect FILE            # architecture, sizes, parameter count, provenance
    python -m full.checkpoint convert IN.pkl OUT      # EDM/SiD pickle -> OUT.safetensors + OUT.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.store.network_file import inspect_network, load_network, save_network


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m full.checkpoint",
        description="Inspect network files or convert EDM/SiD pickles to safetensors + json. Pickles are "
                    "read with a whitelisting unpickler: code embedded in them is never run.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print architecture, preconditioner, sizes, parameter count, provenance",
                       description="Print what a network file holds (EDM/SiD .pkl, or our .safetensors/.json/stem).")
    p.add_argument("file", help="edm-*.pkl, network-snapshot-*.pkl, NAME.safetensors, NAME.json or NAME")
    p.add_argument("--json", action="store_true", help="print the information as one JSON object")
    p = sub.add_parser("convert", help="convert an EDM/SiD pickle to OUT.safetensors + OUT.json",
                       description="Convert a network file to OUT.safetensors + OUT.json (written atomically).")
    p.add_argument("input", help="edm-*.pkl or network-snapshot-*.pkl (or one of our checkpoints)")
    p.add_argument("output", help="output stem OUT, or OUT.safetensors")
    p.add_argument("--preset", help="free-form name recorded in the provenance, e.g. cifar10-uncond")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            info = inspect_network(args.file)
            if args.json:
                print(json.dumps(info))
            else:
                for key, value in info.items():
                    shown = f"{value:,}" if key == "parameters" else json.dumps(value) if key == "provenance" else value
                    print(f"{key:<20}{shown}")
        else:
            net = load_network(args.input)
            provenance = {"converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            if args.preset:
                provenance["preset"] = args.preset
            stem = save_network(net, args.output, provenance)
            print(f"wrote {stem}.safetensors and {stem}.json")
    except USER_ERRORS as e:
        return report_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
