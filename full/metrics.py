"""FID, FD-DINOv2, Inception Score and precision/recall of generators, teachers or image sets (EDM's FID protocol).

    python -m full.metrics ref --data cifar10-32x32.zip --dest cifar10-ref.npz --detector DETECTOR
    python -m full.metrics calc --network SNAPSHOT --ref REF.npz --detector DETECTOR --num 50000 --trials 10
    python -m full.metrics calc --teacher edm.pkl --ref REF.npz --detector DETECTOR           # 18 Heun steps
    python -m full.metrics calc --teacher edm.pkl --sampler imagenet64 --ref REF.npz --detector DETECTOR
    python -m full.metrics calc --images DIR_or_NPZ --ref REF.npz --detector DETECTOR --json
    python -m full.metrics calc --network SNAPSHOT --vae stabilityai/sd-vae-ft-mse --ref REF.npz --detector DETECTOR \\
        --detector-dinov2 dinov2-vitl14.pt --ref-dinov2 REF-DINOV2.npz                     # EDM2 img512: both

DETECTOR is the StyleGAN/EDM Inception TorchScript (see INCEPTION_URL), or one of our feature nets
(NAME.safetensors + NAME.json, e.g. assets/mnist16-classifier for FID-MNIST). Reference statistics
are EDM's .npz files (keys mu, sigma), e.g. https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz.
Trial t of --trials T uses seeds seed_start + t*num ... seed_start + (t+1)*num - 1; results are
reported as mean ± std over trials (sample std), as the SiD paper reports 10 trials of 50k images.
FD-DINOv2 (EDM2's second metric) is the same Fréchet distance in the 1024-d features of DINOv2 ViT-L/14, with
EDM2's preprocessing (bicubic resize to 224x224, ImageNet normalisation) applied by our code: pass
--detector-dinov2 DINOV2.pt (the network as TorchScript; export it once with the command in
full.eval.detectors.DINOV2_EXPORT) with --ref-dinov2 (calc) or --dest-dinov2 (ref). EDM2's reference files
(https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl, img64.pkl) hold both metrics: pass the same
.pkl as --ref and --ref-dinov2 (read by a whitelisting unpickler that admits numpy arrays alone). A latent-space network
(EDM2 img512) is decoded to pixels by its VAE: --vae FOLDER_OR_HUB_ID.
A teacher is sampled with one of EDM's sampler presets (--sampler, see python -m full.generate --help),
--steps overriding its step count; a stochastic sampler's noise is a function of each seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from full.options import checked, nonnegative_int, positive_float, positive_int
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.distributed import pick_device
from full.errors import ConfigError
from full.eval.detectors import INCEPTION_URL, MetricsError, load_detector, load_dinov2
from full.eval.fid import save_stats
from full.eval.measure import (ImageSet, check_dims, dataset_batches, evaluate, generator_batches, image_set_trials,
                               load_reference, measure, reference_statistics)
from full.eval.sampler import SAMPLER_PRESETS, sampler_config
from full.eval.sampling import MAX_SEED, MAX_SEED_COUNT, Seeds
from full.options import Range


def run_ref(args) -> dict:
    """`python -m full.metrics ref`: reference statistics (mu, sigma) of a dataset zip, written to --dest."""
    from full.store.dataset_zip import ImageZipDataset
    _check_dest(args.dest)
    data = ImageZipDataset(args.data, what="--data")
    if data.kind != "png":
        raise MetricsError(f"--data {args.data} holds {data.format.describe()} arrays, not images; detectors "
                           f"measure pixels")
    if bool(args.detector_dinov2) != bool(args.dest_dinov2):
        raise ConfigError("--detector-dinov2 and --dest-dinov2 go together: the DINOv2 network and where its "
                          "reference statistics go")
    if args.dest_dinov2:
        _check_dest(args.dest_dinov2)
    device = pick_device(args.device)
    detector = load_detector(args.detector, device)
    extra = [load_dinov2(args.detector_dinov2, device)] if args.detector_dinov2 else []
    stats = reference_statistics(data, detector, args.batch, extra=extra)
    stats, extra_stats = (stats[0], stats[1:]) if extra else (stats, [])
    save_stats(args.dest, *stats.mean_cov())
    result = {"dest": args.dest, "images": stats.n, "dim": int(len(stats.mu)), "detector": args.detector}
    if extra_stats:
        save_stats(args.dest_dinov2, *extra_stats[0].mean_cov())
        result.update(dest_dinov2=args.dest_dinov2, dim_dinov2=int(len(extra_stats[0].mu)),
                      detector_dinov2=args.detector_dinov2)
    return result


def _check_dest(dest: str) -> None:
    folder = os.path.dirname(dest) or "."
    if os.path.isdir(dest) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise MetricsError(f"--dest {dest} cannot be written; give a file name in an existing, writable folder")


def run_calc(args) -> dict:
    """`python -m full.metrics calc`: FID (and IS, precision/recall) over --trials disjoint sets of --num images."""
    from full.store.dataset_zip import ImageZipDataset
    if not args.teacher and (args.sampler or args.steps):
        raise ConfigError("--sampler and --steps choose how a --teacher is sampled; they do not apply to "
                          + ("--network (one step)" if args.network else "--images"))
    if args.sigma_init is not None and not args.network:
        raise ConfigError("--sigma-init sets a --network generator's noise level; drop it")
    if bool(args.detector_dinov2) != bool(args.ref_dinov2):
        raise ConfigError("--detector-dinov2 and --ref-dinov2 go together: FD-DINOv2 needs the DINOv2 network and "
                          "the reference statistics computed with it (python -m full.metrics ref --detector-dinov2)")
    if args.vae and args.images:
        raise ConfigError("--vae decodes a latent --network or --teacher; --images are pixels already, drop --vae")
    last_seed = args.seed_start + args.num * args.trials - 1
    if not args.images and (last_seed > MAX_SEED or args.num * args.trials > MAX_SEED_COUNT):
        raise ConfigError(f"--seed-start {args.seed_start} with {args.trials} trial(s) of --num {args.num} needs "
                          f"seeds up to {last_seed}; seeds go up to {MAX_SEED} and one run makes at most "
                          f"{MAX_SEED_COUNT:,} images")
    sampler = sampler_config(args.sampler, args.steps) if args.teacher else None
    device = pick_device(args.device)
    ref = load_reference(args.ref, "fid")
    detector = load_detector(args.detector, device)
    distances = {}
    if args.detector_dinov2:
        distances["fd_dinov2"] = (load_dinov2(args.detector_dinov2, device), load_reference(args.ref_dinov2, "fd_dinov2"))
    real = ImageZipDataset(args.pr_data, what="--pr-data") if args.pr_data else None
    report = {"source": args.network or args.teacher or args.images, "detector": args.detector, "ref": args.ref,
              "num": args.num, "trials": args.trials, "seeds": None}
    if args.images:
        images = ImageSet(args.images)
        shape = images.shape
        trials = image_set_trials(images, args.num, args.trials, args.batch)
    else:
        from full.store.network_file import load_network
        net = load_network(args.network or args.teacher, device=device,
                           what="--network" if args.network else "--teacher")
        from full.store.latent import open_encoder
        encoder = open_encoder(net, args.vae, device)
        shape = encoder.pixel_shape(net.img_channels, net.img_resolution)
        seeds = [Seeds.span(args.seed_start + t * args.num, args.num) for t in range(args.trials)]
        report["seeds"] = [[s[0], s[-1]] for s in seeds]
        if sampler is not None:
            report["sampler"] = dataclasses.asdict(sampler)

        def trial(s: Seeds):
            return lambda: generator_batches(net, s, args.batch, sampler=sampler, sigma_init=args.sigma_init,
                                             encoder=encoder)
        trials = [trial(s) for s in seeds]
    check_dims(detector, shape, len(ref[0]), args.ref)
    for name, (other, other_ref) in distances.items():
        check_dims(other, shape, len(other_ref[0]), args.ref_dinov2)
        report[f"detector_{name.removeprefix('fd_')}"] = args.detector_dinov2
    real_features = None if real is None else measure(
        detector, dataset_batches(real, args.batch), len(real), keep_features=True, desc="real features").features
    report.update(evaluate(detector, ref, trials, args.num, inception=not args.no_is, real_features=real_features,
                           distances=distances))
    return report


def print_report(report: dict) -> None:
    trials = report["trials"]
    print(f"{report['source']}: {trials} trial(s) of {report['num']} images"
          + (f", seeds {report['seeds'][0][0]}-{report['seeds'][-1][1]}" if report["seeds"] else ""))
    for key in ("fid", "fd_dinov2", "is", "precision", "recall"):
        if key not in report:
            continue
        line = f"{key:<10} {report[key]['mean']:.4f}"
        if trials > 1:
            line += f" ± {report[key]['std']:.4f} (std over trials)"
        elif key == "is":
            line += f" ± {report[key]['split_std'][0]:.4f} (std over 10 splits)"
        print(line)
    if 0 < len(report.get("class_histogram", ())) <= 20:  # predicted classes of the samples, when readable
        print(f"{'classes':<10} {report['class_histogram']}")


# ---------------------------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m full.metrics", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ref", help="write reference statistics (mu, sigma) of a dataset zip")
    p.add_argument("--data", required=True, help="EDM dataset zip")
    p.add_argument("--dest", required=True, help="output .npz")
    p.add_argument("--detector", default=INCEPTION_URL, help="feature network (default: the Inception TorchScript)")
    p.add_argument("--batch", type=positive_int, default=250, help="images per detector call (default: 250)")
    p.add_argument("--detector-dinov2", default=None, help="DINOv2 ViT-L/14 as TorchScript: also write FD-DINOv2 "
                                                           "reference statistics to --dest-dinov2")
    p.add_argument("--dest-dinov2", default=None, help="output .npz of the DINOv2 reference statistics")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p = sub.add_parser("calc", help="FID (and IS, precision/recall) of a generator, teacher or image set")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="one-step generator snapshot (.safetensors/.json or .pkl)")
    source.add_argument("--teacher", help="EDM teacher, sampled with --sampler (default: 18 Heun steps)")
    source.add_argument("--images", help="folder of PNGs or .npz with NHWC uint8 'images'")
    p.add_argument("--sampler", choices=tuple(SAMPLER_PRESETS), default=None,
                   help="EDM sampler preset for --teacher: 32x32 (18 steps, default), 64x64 (40), imagenet64 "
                        "(256 stochastic steps)")
    p.add_argument("--steps", type=positive_int, default=None, help="Heun steps for --teacher, overriding the preset's")
    p.add_argument("--sigma-init", type=positive_float, default=None, help="override the generator's sigma_init")
    p.add_argument("--ref", required=True, help="reference statistics .npz, or EDM2's .pkl holding fid and fd_dinov2 "
                                                "(path or URL)")
    p.add_argument("--detector", default=INCEPTION_URL, help="feature network (default: the Inception TorchScript)")
    p.add_argument("--num", type=checked(int, Range(2, MAX_SEED_COUNT)), default=50000,
                   help="images per trial (default: 50000)")
    p.add_argument("--trials", type=checked(int, Range(1, 1000)), default=1,
                   help="disjoint seed ranges (or image subsets) (default: 1)")
    p.add_argument("--batch", type=positive_int, default=250, help="images per generator/detector call (default: 250)")
    p.add_argument("--seed-start", type=nonnegative_int, default=0, help="first seed of trial 0 (default: 0)")
    p.add_argument("--detector-dinov2", default=None, help="DINOv2 ViT-L/14 as TorchScript: also report FD-DINOv2 "
                                                           "against --ref-dinov2 (EDM2's second metric)")
    p.add_argument("--ref-dinov2", default=None, help="DINOv2 reference statistics .npz, or EDM2's .pkl (path or URL)")
    p.add_argument("--vae", default=None, help="latent-space --network/--teacher (EDM2 img512): the VAE that decodes "
                                               "it, a diffusers AutoencoderKL folder or hub id")
    p.add_argument("--pr-data", help="dataset zip: also report precision/recall (k=3) against its features")
    p.add_argument("--no-is", action="store_true", help="skip the Inception Score (saves one detector pass)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ref":
            print(json.dumps(run_ref(args)))
        else:
            report = run_calc(args)
            if args.json:
                print(json.dumps(report))
            else:
                print_report(report)
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
