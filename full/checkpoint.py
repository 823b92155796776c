"""Inspect network files, or convert EDM/SiD pickles to our safetensors + JSON pair.

    python -m full.checkpoint inspect FILE            # architecture, sizes, parameter count, dtype, provenance
    python -m full.checkpoint convert IN.pkl OUT      # EDM/EDM2/SiD pickle -> OUT.safetensors + OUT.json

FILE and IN are paths or URLs (downloaded once into the cache). EDM2's release pickles
(edm2-img512-*.pkl, edm2-img64-*.pkl) store float16 weights; they are loaded, and converted, as float32,
and their encoder (pixels, or Stable Diffusion VAE latents with its scale and bias) is recorded in OUT.json.
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
        description="Inspect network files or convert EDM/EDM2/SiD pickles to safetensors + json. Pickles are "
                    "read with a whitelisting unpickler: code embedded in them is never run.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print architecture, preconditioner, sizes, parameter count, provenance",
                       description="Print what a network file holds (EDM/EDM2/SiD .pkl, or our .safetensors/.json/stem).")
    p.add_argument("file", help="edm-*.pkl, edm2-*.pkl, network-snapshot-*.pkl, NAME.safetensors, NAME.json or NAME")
    p.add_argument("--json", action="store_true", help="print the information as one JSON object")
    p = sub.add_parser("convert", help="convert an EDM/EDM2/SiD pickle to OUT.safetensors + OUT.json",
                       description="Convert a network file to OUT.safetensors + OUT.json (written atomically).")
    p.add_argument("input", help="edm-*.pkl, edm2-*.pkl or network-snapshot-*.pkl (or one of our checkpoints)")
    p.add_argument("output", help="output stem OUT, or OUT.safetensors")
    p.add_argument("--preset", help="free-form name recorded in the provenance, e.g. cifar10-uncond")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            info = inspect_network(args.file, what="FILE")
            if args.json:
                print(json.dumps(info))
            else:
                for key, value in info.items():
                    shown = (f"{value:,}" if key == "parameters" else json.dumps(value)
                             if key in ("provenance", "encoder") else value)
                    print(f"{key:<20}{shown}")
        else:
            net = load_network(args.input, what="INPUT")
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
