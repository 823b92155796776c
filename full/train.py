"""Distil an EDM teacher into a one-step generator with SiD or SiDA.

    python -m full.train --preset cifar10-uncond --teacher edm-cifar10-32x32-uncond-vp.pkl --outdir runs/c10
    torchrun --nproc_per_node 4 -m full.train --preset cifar10-uncond --outdir runs/c10
    python -m full.train --preset sida-cifar10-uncond --data cifar10-32x32.zip --outdir runs/c10-sida
    python -m full.train --preset mnist16-cpu --outdir runs/mnist      # real distillation on a CPU
    python -m full.train --preset mnist16-sid2a-cpu --outdir runs/mnist-sid2a   # SiD²A from assets/mnist16-sid
    python -m full.train --preset ffhq64 --dry-run                     # print the resolved config

The run directory belongs to one run. It holds config.json, log.jsonl (one typed Tick record per tick; read it
with full.method.records.read_log), progress.json (after every iteration), sample grids of G_ema on fixed seeds
(grid-KIMG.png), G_ema snapshots (network-snapshot-KIMG.safetensors/.json, loadable by full.generate) and the
last --keep training states (training-state-KIMG.pt). Every file is written atomically.

Running the same command again resumes from the newest state (--resume auto). A resume must keep everything that
changes the mathematics (teacher weights, alpha, learning rates, batch, sigma_init, t_max, precision, seed,
augmentation, dropout, ...); bookkeeping (duration, tick, snap, metric options, threads, device) may change.
Starting a fresh run (--resume none) in a directory that holds one is refused.

Ctrl-C, SIGTERM (sent by SLURM and Kubernetes before a kill) and SIGUSR1 (SLURM's --signal pre-timeout warning)
finish the current iteration, save a training state and exit (status 128 + signal number); a second Ctrl-C
stops at once, without saving.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import glob
import hashlib
import json
import math
import os
import signal
import sys
import threading

import torch
from tqdm import tqdm

from full import distributed
from full.cli import USER_ERRORS, ArgumentParser, report_error
from full.errors import ConfigError
from full.method.loop import training_loop
from full.method.presets import PRESETS, SiDConfig, resolve
from full.method.records import Progress, Tick, read_log
from full.options import add_options, overrides
from full.store.atomic import atomic_write, atomic_write_text, remove_leftovers

STATE_GLOB = "training-state-*.pt"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


# ---------------------------------------------------------------------------------------- stopping


class Stopped(Exception):
    """The run was asked to stop by a signal and saved a training state."""

    def __init__(self, signum: int, kimg: float):
        super().__init__(f"stopped by {signal.Signals(signum).name}: saved a training state at {kimg:.3f} kimg; "
                         f"run the same command to resume")
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGUSR1 become a request honoured between iterations, so a saved state never holds half
    an iteration (f_psi stepped, G not). A second Ctrl-C interrupts at once, without saving. Signals can only be
    caught on the main thread; elsewhere (Streamlit scripts) they keep their usual meaning."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------------------- fingerprints


def weights_sha256(net: torch.nn.Module) -> str:
    """A fingerprint of a network's weights: sha256 over every state-dict entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d: EDM2 gains
    return digest.hexdigest()


def differences(theirs: dict, mine: dict) -> list[str]:
    """'name: theirs -> mine' for every key whose value differs."""
    return [f"{k} {theirs.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(theirs) | set(mine))
            if theirs.get(k) != mine.get(k)]


# ---------------------------------------------------------------------------------------- the run directory


class RunDirectory:
    """One run's folder: a lock held while a process trains in it, its states, log, progress and config."""

    def __init__(self, path: str):
        self.path = path
        self._lock = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def claim(self) -> None:
        """Create the folder, take its lock (one process at a time) and remove leftovers of killed writes."""
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock = open(self.file(".lock"), "a+")
        except OSError as error:
            raise ConfigError(f"cannot write to --outdir {self.path}: {error.strerror}; choose a writable "
                              f"directory") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another process is training in --outdir {self.path}; wait for it, or choose "
                              f"another --outdir") from None
        except OSError:
            pass  # file systems without flock (some NFS mounts): no lock, as before
        freed = remove_leftovers(self.path)
        if freed:
            tqdm.write(f"removed {freed / 2 ** 20:.1f} MB of temporary files left by an interrupted run")

    def states(self) -> list[str]:
        return sorted(glob.glob(self.file(STATE_GLOB)))

    def holds_run(self) -> bool:
        return os.path.exists(self.file("config.json")) or bool(self.states()) or os.path.exists(self.file("log.jsonl"))

    def recorded(self) -> dict | None:
        """The config.json of the run this folder holds, or None."""
        try:
            with open(self.file("config.json"), encoding="utf-8") as f:
                recorded = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            raise ConfigError(f"{self.file('config.json')} is not readable JSON; use a new --outdir") from None
        if not isinstance(recorded, dict):
            raise ConfigError(f"{self.file('config.json')} is not a sid run's config; use a new --outdir")
        return recorded

    def write_json(self, name: str, value: dict, durable: bool = True) -> None:
        atomic_write_text(self.file(name), json.dumps(value, indent=2) + "\n", durable)

    def append_log(self, tick: Tick) -> None:
        """Append one line and push it to disk (a crash can tear at most this line; `read_log` skips it)."""
        with open(self.file("log.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(tick.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def trim_log(self, iteration: int) -> None:
        """Keep the log's ticks up to `iteration` (the state resumed from), dropping a torn last line and ticks
        that will be run again."""
        if not os.path.exists(self.file("log.jsonl")):
            return
        kept = [t for t in read_log(self.file("log.jsonl")) if t.iteration <= iteration]
        atomic_write_text(self.file("log.jsonl"), "".join(json.dumps(t.to_json()) + "\n" for t in kept))

    def save_state(self, state: dict, tag: str, keep: int) -> None:
        atomic_write(self.file(f"training-state-{tag}.pt"), lambda tmp: torch.save(state, tmp))
        for old in self.states()[:-keep]:
            os.unlink(old)


def load_state(path: str) -> dict:
    """Read a training state safely (tensors and plain containers only) and check its layout."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--resume {path}: no such training state") from None
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise ConfigError(f"cannot read training state {path} ({type(error).__name__}); delete it to resume from "
                          f"an older state, or use a new --outdir") from None
    keys = {"G", "G_ema", "f_psi", "opt_G", "opt_psi", "scalers", "iteration", "nimg", "torch_rng", "run"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise ConfigError(f"{path} is not a training state of this version of sid (keys missing); "
                          f"use a new --outdir")
    return state


# ---------------------------------------------------------------------------------------- loading inputs


def load_teacher(config: SiDConfig) -> torch.nn.Module:
    """The teacher on the CPU, checked against the preset's resolution and label count and the augmentation."""
    from full.store.network_file import load_network
    if not config.teacher:
        raise ConfigError("no teacher given; pass --teacher PATH_OR_URL (an EDM .pkl or our .safetensors/.json)")
    teacher = load_network(config.teacher, what="--teacher")
    if config.resolution is not None and teacher.img_resolution != config.resolution:
        raise ConfigError(f"the teacher is {teacher.img_resolution}x{teacher.img_resolution} but the preset expects "
                          f"{config.resolution}x{config.resolution}; use the matching preset or --resolution")
    if config.label_dim is not None and teacher.label_dim != config.label_dim:
        raise ConfigError(f"the teacher has {teacher.label_dim} class labels but the preset expects "
                          f"{config.label_dim}; use the matching preset or --label-dim")
    from full.store.latent import encoder_for
    encoder = encoder_for(teacher)
    if encoder.latent and not config.vae:
        raise ConfigError(f"the teacher works in the latent space of the VAE {encoder.vae_name}; pass --vae PATH_OR_ID "
                          f"(a diffusers AutoencoderKL folder, or the hub id {encoder.vae_name}) to decode sample "
                          f"grids and FID images")
    if not encoder.latent and config.vae:
        raise ConfigError(f"--vae {config.vae}: the teacher works in pixel space and needs no VAE; drop --vae")
    if config.augment > 0 and not getattr(teacher, "init_kwargs", {}).get("augment_dim"):
        raise ConfigError(f"--augment {config.augment} needs a teacher trained with augmentation (augment_dim 9, "
                          f"as EDM's CIFAR-10/FFHQ/AFHQ teachers); this teacher has none: use --augment 0")
    return teacher


def load_init_generator(config: SiDConfig, teacher: torch.nn.Module) -> torch.nn.Module | None:
    """SiD²A: the distilled generator G starts from, checked to have the teacher's architecture."""
    if not config.init_generator:
        return None
    from full.store.network_file import load_network
    net = load_network(config.init_generator, what="--init-generator")
    from full.nets import same_layout
    if not same_layout(teacher.state_dict(), net.state_dict()):
        raise ConfigError(f"--init-generator {config.init_generator} does not have the teacher's architecture; "
                          f"give a generator distilled from this teacher")
    return net


def open_data(config: SiDConfig, teacher: torch.nn.Module):
    """SiDA's real images: the dataset zip, streamed, checked against the teacher."""
    if not config.data:
        return None
    from full.store.dataset_zip import ImageZipDataset
    from full.store.latent import encoder_for
    dataset = ImageZipDataset(config.data, what="--data")
    encoder = encoder_for(teacher)
    if dataset.kind != encoder.dataset_kind:
        raise ConfigError(
            f"--data {config.data} holds {dataset.format.describe()} {'arrays (latents)' if dataset.kind == 'npy' else 'images'}"
            f", but the teacher works in {'the latent space of ' + encoder.vae_name if encoder.latent else 'pixel space'}"
            f"; give its training set {'encoded with python -m full.dataset convert-latent' if encoder.latent else 'as PNGs (EDM dataset zip)'}")
    dataset.check_matches(teacher.img_resolution, encoder.raw_channels(teacher.img_channels), teacher.label_dim,
                          what="--data")
    return dataset


def data_fingerprint(dataset) -> dict | None:
    return None if dataset is None else {"images": len(dataset), "resolution": dataset.resolution,
                                         "channels": dataset.channels, "label_dim": dataset.label_dim}


def check_outputs(config: SiDConfig, teacher: torch.nn.Module, device: torch.device) -> None:
    """Load what the main rank's grids and FID use, on the run's device and once per process (the VAE of a latent
    teacher, the FID detector and reference statistics), and check that they fit each other and the images, so a
    mistake stops the run before its first iteration, not after its first tick."""
    from full.store.latent import decoder_for
    decoder = decoder_for(teacher, config.vae, device)
    if not config.metric_every:
        return
    from full.eval.measure import cached_detector, cached_stats, check_dims
    mu, _ = cached_stats(config.metric_ref)
    shape = decoder.pixel_shape(teacher.img_channels, teacher.img_resolution)  # latents: through the VAE
    check_dims(cached_detector(config.detector, str(device)), shape, len(mu), config.metric_ref, "--metric-ref")


# ---------------------------------------------------------------------------------------- the run


class Run:
    """A SiD run in a directory: it consumes `training_loop`, writes every artefact, and yields each record on."""

    def __init__(self, config: SiDConfig, outdir: str, preset: str | None = None, resume: str = "auto"):
        from full.method.sid import SiDTrainer
        self.config, self.preset = config, preset
        self.ranks = distributed.init(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.directory = RunDirectory(outdir)
        if self.ranks.is_main:
            self.directory.claim()
        teacher = load_teacher(config)
        self.teacher_sha256 = weights_sha256(teacher)
        data = open_data(config, teacher)
        if self.ranks.is_main:
            check_outputs(config, teacher, self.ranks.device)
        mine = {"config": config.mathematics(), "teacher_sha256": self.teacher_sha256,
                "data": data_fingerprint(data)}
        state_path = self._choose_state(resume, mine)
        init = None if state_path else load_init_generator(config, teacher)
        self.trainer = SiDTrainer(config, teacher, self.ranks, data=data, init_generator=init)
        if config.labels_from:
            from full.store.dataset_zip import label_sampler
            self.trainer.label_source = label_sampler(config.labels_from, teacher.label_dim)
        self.seconds = 0.0
        if state_path:
            state = load_state(state_path)
            self._check_same_run(state["run"], mine, f"the training state {state_path}")
            self.trainer.load_state_dict(state)
            self.seconds = float(state.get("seconds", 0.0))
            if self.ranks.is_main:
                self.directory.trim_log(self.trainer.iteration)
            self.log(f"resumed from {state_path} at {self.trainer.nimg / 1000:.3f} kimg")
        self.run_record = mine
        self.signals = StopSignals()  # installed by whoever runs this on the main thread (`main`)
        self.total_iterations = math.ceil(config.duration * 1e6 / config.batch)
        self.tick_iterations = max(1, round(config.tick * 1000 / config.batch))
        if self.ranks.is_main:
            self.directory.write_json("config.json", {
                "preset": preset, **dataclasses.asdict(config), "world_size": self.ranks.world,
                "precision_in_use": str(self.trainer.dtype).removeprefix("torch."),
                "teacher_sha256": self.teacher_sha256, "data_fingerprint": mine["data"]})

    def _choose_state(self, resume: str, mine: dict) -> str | None:
        """The state to resume from (None: start fresh), refusing to mix two runs in one directory."""
        directory = self.directory
        recorded = directory.recorded()
        if resume == "none":
            if directory.holds_run():
                raise ConfigError(f"--outdir {directory.path} already holds a run; resume it (--resume auto) or "
                                  f"start this one in a new --outdir")
            return None
        if resume == "auto":
            states = directory.states()
            if states:
                return states[-1]
            if recorded is not None:  # a run that stopped before its first state: start it again, if it is this one
                self._check_same_run({"config": {k: recorded.get(k) for k in mine["config"]},
                                      "teacher_sha256": recorded.get("teacher_sha256"),
                                      "data": recorded.get("data_fingerprint")}, mine,
                                     f"the run in --outdir {directory.path}")
            return None
        if recorded is not None and recorded.get("teacher_sha256") != mine["teacher_sha256"]:
            raise ConfigError(f"--outdir {directory.path} holds another run; resume {resume} into a new --outdir")
        return resume

    @staticmethod
    def _check_same_run(theirs: dict, mine: dict, what: str) -> None:
        if theirs.get("teacher_sha256") != mine["teacher_sha256"]:
            raise ConfigError(f"{what} was made from another teacher (weights differ); resume with the teacher it "
                              f"was made from, or use a new --outdir")
        if theirs.get("data") != mine["data"]:
            raise ConfigError(f"{what} was made with other --data ({theirs.get('data')} vs {mine['data']}); "
                              f"resume with the same dataset, or use a new --outdir")
        changed = differences(theirs.get("config", {}), mine["config"])
        if changed:
            raise ConfigError(f"{what} was made with other settings that change the mathematics: "
                              f"{'; '.join(changed)}; pass the same values, or use a new --outdir")

    def log(self, message: str) -> None:
        if self.ranks.is_main:
            tqdm.write(message)

    @property
    def kimg_tag(self) -> str:
        return f"{self.trainer.nimg / 1000:010.3f}"

    # -------------------------------------------------------------------- writers
    def save_grid(self) -> None:
        from full.eval.images import enlarge, grid, save_png
        from full.eval.sampling import sample_images
        from full.store.latent import decoder_for
        G = self.trainer.G_ema
        images = sample_images(G, list(range(self.config.grid)), sigma_init=self.config.sigma_init)
        pixels = decoder_for(G, self.config.vae).decode(images).permute(0, 2, 3, 1).cpu().numpy()  # latents: VAE
        save_png(grid(enlarge(pixels)), self.directory.file(f"grid-{self.kimg_tag}.png"))

    def save_snapshot(self) -> None:
        from full.store.network_file import save_network
        save_network(self.trainer.G_ema, self.directory.file(f"network-snapshot-{self.kimg_tag}"), provenance={
            "kind": "sid-generator", "preset": self.preset, "objective": self.config.objective,
            "kimg": self.trainer.nimg / 1000, "sigma_init": self.config.sigma_init, "alpha": self.config.alpha,
            "teacher": self.config.teacher, "teacher_sha256": self.teacher_sha256,
            **({"init_generator": self.config.init_generator} if self.config.init_generator else {})})

    def save_state(self, seconds: float) -> None:
        if self.ranks.is_main:
            state = {**self.trainer.state_dict(), "run": self.run_record, "seconds": seconds}
            self.directory.save_state(state, self.kimg_tag, self.config.keep)

    def evaluate(self) -> dict:
        from full.eval.measure import generator_fid
        return {"fid": generator_fid(self.trainer.G_ema, self.config)}

    def stop_agreed(self, signals: StopSignals) -> bool:
        """Whether any rank was asked to stop, so that every rank stops after the same iteration."""
        if self.ranks.world == 1:
            return signals.signum is not None
        flag = torch.tensor([float(signals.signum or 0)], device=self.ranks.device)
        return distributed.all_reduce_sum(flag, self.ranks).item() > 0

    def __iter__(self):
        """Train to the end, yielding every `Progress` and `Tick` after writing what it calls for."""
        main, config = self.ranks.is_main, self.config
        if self.trainer.iteration == 0 and main:
            self.save_grid()
            self.save_snapshot()
        seconds, signals, saved = self.seconds, self.signals, None
        loop = training_loop(self.trainer, self.total_iterations, self.tick_iterations,
                             should_stop=lambda: self.stop_agreed(signals), nan_patience=config.nan_patience,
                             seconds=self.seconds)
        for record in loop:
            if isinstance(record, Progress):
                seconds = record.seconds
                if main:
                    self.directory.write_json("progress.json", record.to_json(), durable=False)
            else:
                final = record.iteration == self.total_iterations
                if main and config.metric_every and (record.tick % config.metric_every == 0 or final):
                    record.metrics.update(self.evaluate())
                if main and (final or record.tick % config.snap == 0):
                    self.save_grid()
                    self.save_snapshot()
                if final or record.tick % config.state_every == 0:
                    self.save_state(record.seconds)
                    saved = record.iteration
                if main:
                    self.directory.append_log(record)
            yield record
        if signals.signum is not None and self.trainer.iteration < self.total_iterations:
            if saved != self.trainer.iteration:  # a state of this very iteration is not written twice
                self.save_state(seconds)
            raise Stopped(signals.signum, self.trainer.nimg / 1000)


# ---------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m full.train", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--outdir", default=None, help="run directory (default: runs/<preset>)")
    parser.add_argument("--resume", default="auto", help="auto (newest state in --outdir, or a fresh run), none "
                                                         "(a fresh run; refused if --outdir holds one), or a state path")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    add_options(parser.add_argument_group("config (overrides the preset)"), SiDConfig)
    return parser


def tick_line(tick: Tick) -> str:
    """One readable line per tick: kimg, each loss term, cost, NaN counts, metrics."""
    parts = [f"tick {tick.tick}", f"kimg {tick.kimg:.3f}"]
    parts += [f"psi.{k} {v:.4g}" for k, v in tick.fake.items()]
    parts += [f"G.{k} {v:.4g}" for k, v in tick.generator.items()]
    parts += [f"sec/kimg {tick.sec_per_kimg:.3g}", f"mem {tick.peak_mem_gib:.2f} GiB"]
    if tick.nan_samples or tick.nonfinite_grads:
        parts += [f"dropped {tick.nan_samples}", f"bad-grads {tick.nonfinite_grads}"]
    parts += [f"{k} {v:.4g}" for k, v in tick.metrics.items()]
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve(args.preset, overrides(args, SiDConfig))
        if args.dry_run:
            print(json.dumps({"preset": args.preset, **dataclasses.asdict(config)}, indent=2))
            return 0
        run = Run(config, args.outdir or os.path.join("runs", args.preset or "sid"), args.preset, args.resume)
        main_rank = run.ranks.is_main
        with run.signals, tqdm(total=run.total_iterations * config.batch, initial=run.trainer.nimg, unit="img",
                               unit_scale=True, disable=not main_rank, dynamic_ncols=True) as bar:
            for record in run:
                if isinstance(record, Progress):
                    bar.update(round(record.kimg * 1000) - bar.n)
                elif main_rank:
                    shown = lambda terms: f"{terms['loss']:.3g}" if "loss" in terms else "-"  # noqa: E731 (G may wait)
                    bar.set_postfix({"G": shown(record.generator), "psi": shown(record.fake)})
                    tqdm.write(tick_line(record))
        distributed.shutdown()
        return 0
    except Stopped as stop:
        print(stop, file=sys.stderr)
        return 128 + stop.signum
    except USER_ERRORS as error:
        return report_error(error)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
