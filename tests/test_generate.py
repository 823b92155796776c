"""full.generate: seed ranges that are never listed, per-seed images (one step or a sampler preset, churn noise
included), sharding, the streamed npz, and every user mistake as one line with nothing written."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from full import distributed, generate
from full.errors import ConfigError
from full.eval.sampler import SAMPLER_PRESETS
from full.eval.sampling import MAX_SEED, Seeds, format_seeds, parse_seeds, sample_images
from full.nets.architectures import build_edm
from full.store.network_file import load_network, save_network
from in_process import run_main


# ------------------------------------------------------------------------------------------------ seeds


def test_parse_seeds_forms_and_order():
    assert list(parse_seeds("0-4")) == [0, 1, 2, 3, 4]
    seeds = parse_seeds("10-12, 1,5")
    assert list(seeds) == [1, 5, 10, 11, 12] and len(seeds) == 5 and seeds[2] == 10 and seeds[-1] == 12
    assert format_seeds(seeds) == "1,5,10-12" and parse_seeds(format_seeds(seeds)) == seeds
    assert list(seeds[1:4]) == [5, 10, 11] and list(seeds.batches(2)) == [[1, 5], [10, 11], [12]]


def test_large_ranges_are_never_listed():
    seeds = parse_seeds(f"0-{MAX_SEED}", limit=2 ** 33)  # 2^32 seeds: held as one range
    assert len(seeds) == 2 ** 32 and seeds[2 ** 31 + 7] == 2 ** 31 + 7
    shard = seeds.shard(3, 4)
    assert shard.ranges == ((3 * 2 ** 30, 2 ** 32 - 1),)
    assert next(shard.batches(3)) == [3 * 2 ** 30, 3 * 2 ** 30 + 1, 3 * 2 ** 30 + 2]


def test_shards_are_contiguous_and_cover_the_seeds():
    seeds = parse_seeds("0-9,100,200-204")
    shards = [seeds.shard(r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [5, 5, 6]
    assert sum((list(s) for s in shards), []) == list(seeds)
    assert list(Seeds.span(5, 3)) == [5, 6, 7] and len(Seeds.span(5, 0)) == 0


@pytest.mark.parametrize("text, needle", [("5-1", "the range 5-1 runs backwards"), ("0-999999999999", "999999999999 is above"),
                                          ("0-4294967295", "4,294,967,296 images"), ("1,1", "seed 1 is given twice"),
                                          ("0-5,3-7", "seed 3 is given twice"), ("-3", "cannot read '-3'"),
                                          ("a-b", "cannot read 'a-b'"), ("", "cannot read ''"), ("1,,2", "cannot read ''")])
def test_parse_seeds_refuses(text, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as error:
        parse_seeds(text)
    assert str(error.value).startswith(f"--seeds {text!r}: ")


# ------------------------------------------------------------------------------------------------ networks


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    torch.manual_seed(0)
    small = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[], dropout=0.0)
    save_network(build_edm("ddpmpp", 8, 1, 0, **small), root / "uncond")
    save_network(build_edm("ddpmpp", 8, 3, 4, **small), root / "cond")
    return {"root": root, "uncond": str(root / "uncond.json"), "cond": str(root / "cond.json")}


def read_pngs(outdir, seeds):
    return np.stack([np.array(Image.open(generate.png_path(str(outdir), s))) for s in seeds])


def cli(capsys, *argv):
    return run_main(generate.main, capsys, *argv)


def test_images_depend_on_the_seed_alone(nets, tmp_path, capsys):
    code, out, err = cli(capsys, "--network", nets["uncond"], "--seeds", "3-9,20", "--batch", 3, "--outdir",
                         tmp_path / "a", "--npz")
    assert code == 0, err
    assert out.startswith(f"wrote 8 images to {tmp_path / 'a'}")
    pngs = read_pngs(tmp_path / "a", [3, 4, 5, 6, 7, 8, 9, 20])
    with np.load(tmp_path / "a" / "images.npz") as npz:
        assert npz["seeds"].tolist() == [3, 4, 5, 6, 7, 8, 9, 20]
        assert np.array_equal(npz["images"][..., 0], pngs)
    assert sorted(os.listdir(tmp_path / "a")) == ["000000", "images.npz"]  # no shard left behind
    net = load_network(nets["uncond"])
    for rank in range(3):  # each rank writes its own contiguous share; together they make the same images
        generate.generate(net, parse_seeds("3-9,20"), str(tmp_path / "b"), batch=2,
                          ranks=distributed.Ranks(rank, 3, torch.device("cpu")))
    assert np.abs(read_pngs(tmp_path / "b", [3, 4, 5, 6, 7, 8, 9, 20]).astype(int) - pngs).max() <= 1


def test_sampler_presets_reach_the_teacher_and_churn_follows_the_seed(nets):
    net = load_network(nets["cond"])
    preset = SAMPLER_PRESETS["imagenet64"].with_steps(3)  # sigmas 80, 2.5, 0.002: churn at the middle one
    torch.manual_seed(1)
    together = sample_images(net, [7, 8, 9], sampler=preset)
    torch.manual_seed(2)  # the global RNG plays no part
    alone = sample_images(net, [9], sampler=preset)
    assert torch.allclose(together[2:], alone, atol=1e-5)
    assert torch.equal(sample_images(net, [7, 8, 9], sampler="imagenet64", teacher_steps=3), together)
    deterministic = sample_images(net, [9], sampler=SAMPLER_PRESETS["64x64"].with_steps(3))
    assert (alone - deterministic).abs().max() > 1e-3  # churn noise was added
    assert torch.equal(sample_images(net, [9], teacher_steps=3), deterministic)


def test_teacher_cli_with_a_preset_and_steps(nets, tmp_path, capsys):
    code, out, err = cli(capsys, "--teacher", nets["cond"], "--sampler", "imagenet64", "--steps", 2, "--seeds", "0-1",
                         "--class", 3, "--outdir", tmp_path)
    assert code == 0, err
    assert "3 NFE" in out and read_pngs(tmp_path, [0, 1]).shape == (2, 8, 8, 3)


# ------------------------------------------------------------------------------------------------ user mistakes


MISTAKES = [
    (["--network", "{uncond}", "--batch", "-3"], "argument --batch: -3 is not allowed"),
    (["--network", "{uncond}", "--batch", "0"], "argument --batch: 0 is not allowed"),
    (["--network", "{uncond}", "--batch", "inf"], "argument --batch: 'inf' is not a whole number"),
    (["--network", "{uncond}", "--seeds", "5-1"], "argument --seeds: the range 5-1 runs backwards"),
    (["--network", "{uncond}", "--seeds", "0-999999999999"], "argument --seeds: seed 999999999999 is above"),
    (["--network", "{uncond}", "--seeds", "0-99999999"], "0-99999999 names 100,000,000 images"),
    (["--teacher", "{uncond}", "--steps", "0"], "argument --steps: 0 is not allowed"),
    (["--teacher", "{uncond}", "--sampler", "bogus"], "argument --sampler: invalid choice: 'bogus'"),
    (["--network", "{uncond}", "--steps", "4"], "--sampler and --steps choose how a --teacher is sampled"),
    (["--teacher", "{uncond}", "--sigma-init", "2"], "--sigma-init sets a --network generator's noise level"),
    (["--network", "{uncond}", "--sigma-init", "nan"], "argument --sigma-init: nan is not allowed"),
    (["--network", "{uncond}", "--device", "bogus"], "--device 'bogus' is not a device"),
    (["--network", "{uncond}", "--class", "0"], "--class 0: the network is unconditional"),
    (["--network", "{cond}", "--class", "4"], "--class 4 is out of range; the network has classes 0 to 3"),
    (["--network", "{cond}", "--class", "-1"], "argument --class: -1 is not allowed"),
    (["--network", "{root}/missing.json"], "missing.json"),
]


@pytest.mark.parametrize("argv, needle", MISTAKES, ids=[" ".join(a[2:]) or a[1] for a, _ in MISTAKES])
def test_mistakes_are_one_line_and_write_nothing(nets, tmp_path, capsys, argv, needle):
    outdir = tmp_path / "out"
    code, out, err = cli(capsys, *[a.format(**nets) for a in argv], "--outdir", outdir)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not outdir.exists()


def test_outdir_that_is_a_file(nets, tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    code, _, err = cli(capsys, "--network", nets["uncond"], "--outdir", tmp_path / "file")
    assert code == 2 and "--outdir" in err and "is a file" in err
    assert (tmp_path / "file").read_text() == "keep me"


def test_module_entry_point_reports_one_line(nets, tmp_path):
    result = subprocess.run([sys.executable, "-m", "full.generate", "--network", nets["uncond"], "--seeds", "5-1",
                             "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--seeds" in result.stderr and "5-1" in result.stderr and not (tmp_path / "out").exists()
