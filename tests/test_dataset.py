"""EDM dataset zips: streamed reading, labels, EDM2's .npy arrays, malformed zips as one-line errors, the check
against a teacher, thread and fork safety, and the `full.dataset` command line."""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from full import dataset as dataset_cli
from full.store.dataset_zip import DatasetError, ImageZipDataset, image_name, label_sampler, write_dataset
from in_process import assert_one_line_error, run_main


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR declares width x height (8-bit, RGB or 0 = gray) with a tiny, wrong IDAT: only a header
    check survives it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def make_zip(path, entries: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data if isinstance(data, bytes) else json.dumps(data))
    return str(path)


RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (5, 8, 8), dtype=np.uint8)
NAMES = [image_name(i) for i in range(5)]


def gray_zip(path, labels=None, extra: dict | None = None) -> str:
    entries = {n: png_bytes(GRAY[i]) for i, n in enumerate(NAMES)}
    if labels is not ...:
        entries["dataset.json"] = {"labels": labels}
    return make_zip(path, {**entries, **(extra or {})})


# ------------------------------------------------------------------------------------------------ reading


def test_round_trip_batch_and_labels(tmp_path):
    images = RNG.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0, 3, 1, 1, 2, 0, 3])
    assert write_dataset(tmp_path / "d.zip", images, labels) == 7
    data = ImageZipDataset(tmp_path / "d.zip")
    assert (len(data), data.resolution, data.channels, data.label_dim, data.kind) == (7, 8, 3, 4, "png")
    x, y = data.batch([6, 0, 6])
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 8, 8)
    assert torch.equal(x, torch.from_numpy(images[[6, 0, 6]]).permute(0, 3, 1, 2))
    assert y.dtype == torch.float32 and torch.equal(y.argmax(1), torch.tensor([3, 0, 3])) and torch.equal(y.sum(1), torch.ones(3))
    none, only_labels = data.batch(torch.tensor([1, 2]), images=False)
    assert none is None and torch.equal(only_labels.argmax(1), torch.tensor([3, 1]))
    assert data.batch([1], label_dim=10)[1].shape == (1, 10)
    image, label = data[4]
    assert torch.equal(image, torch.from_numpy(images[4]).permute(2, 0, 1)) and label.tolist() == [0, 0, 1, 0]
    streamed = torch.cat([b for b, _ in data.batches(3)])
    assert torch.equal(streamed, data.all_images()) and len(streamed) == 7


def test_unlabelled_and_gray(tmp_path):
    data = ImageZipDataset(gray_zip(tmp_path / "g.zip", labels=None))
    x, y = data.batch([2])
    assert y is None and data.label_dim == 0 and data.labels is None
    assert torch.equal(x[0, 0], torch.from_numpy(GRAY[2]))
    assert ImageZipDataset(gray_zip(tmp_path / "nojson.zip", labels=...)).labels is None  # EDM: no dataset.json


def test_all_images_refuses_what_would_not_fit(tmp_path):
    data = ImageZipDataset(gray_zip(tmp_path / "g.zip"))
    with pytest.raises(DatasetError, match=r"holds 5 images.*read it in batches"):
        data.all_images(max_bytes=5 * 64 - 1)
    assert data.all_images(max_bytes=5 * 64).shape == (5, 1, 8, 8)


def test_npy_latents_like_edm2(tmp_path):
    """EDM2's latent zips: img-mean-std-XXXXXXXX.npy arrays [8, H, W] (float32) with labels."""
    latents = RNG.normal(size=(3, 8, 4, 4)).astype(np.float32)
    names = [f"00000/img-mean-std-{i:08d}.npy" for i in range(3)]
    path = make_zip(tmp_path / "lat.zip", {**{n: npy_bytes(latents[i]) for i, n in enumerate(names)},
                                           "dataset.json": {"labels": [[n, i] for i, n in enumerate(names)]}})
    data = ImageZipDataset(path)
    assert (data.kind, data.channels, data.resolution, data.label_dim) == ("npy", 8, 4, 3)
    x, y = data.batch([2, 0])
    assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(latents[[2, 0]]))
    assert torch.equal(y.argmax(1), torch.tensor([2, 0]))
    assert "4x4 8-channel float images with 3 labels" == data.describe()


# ------------------------------------------------------------------------------------------ malformed zips


MALFORMED = {
    "labels a number": (lambda p: gray_zip(p, labels=5), r'"labels" is a int; it must be a list'),
    "labels a dict": (lambda p: gray_zip(p, labels={"a": 1}), r'"labels" is a dict'),
    "too few labels": (lambda p: gray_zip(p, labels=[[n, 0] for n in NAMES[:4]]), "lists 4 labels for 5 images"),
    "negative label": (lambda p: gray_zip(p, labels=[[n, -1 if i == 2 else 0] for i, n in enumerate(NAMES)]),
                       r"the label of 00000/img00000002.png is -1"),
    "fractional label": (lambda p: gray_zip(p, labels=[[n, 1.5] for n in NAMES]), r"is 1.5; labels are class indices"),
    "string label": (lambda p: gray_zip(p, labels=[[n, "cat"] for n in NAMES]), r'is "cat"'),
    "boolean label": (lambda p: gray_zip(p, labels=[[n, True] for n in NAMES]), r"is true"),
    "huge label": (lambda p: gray_zip(p, labels=[[n, 10 ** 9] for n in NAMES]), r"below 100000"),
    "missing file": (lambda p: gray_zip(p, labels=[[n, 0] for n in NAMES[:4]] + [["00000/nope.png", 1]]),
                     "labels 00000/nope.png, which is not an image in the zip"),
    "named twice": (lambda p: gray_zip(p, labels=[[n, 0] for n in NAMES[:4]] + [[NAMES[0], 1]]), "twice"),
    "not a pair": (lambda p: gray_zip(p, labels=[[n] for n in NAMES]), "is not a \\[name, class\\] pair"),
    "no labels key": (lambda p: make_zip(p, {NAMES[0]: png_bytes(GRAY[0]), "dataset.json": {"other": 1}}),
                      'must be an object with a "labels" entry'),
    "bad json": (lambda p: make_zip(p, {NAMES[0]: png_bytes(GRAY[0]), "dataset.json": b"{not json"}),
                 "is not valid JSON"),
    "not a zip": (lambda p: (p.write_bytes(os.urandom(300)), str(p))[1], "is not a zip file"),
    "no images": (lambda p: make_zip(p, {"dataset.json": {"labels": None}}), "holds no .png images"),
    "30000x30000 png": (lambda p: make_zip(p, {NAMES[0]: png_header_only(30000, 30000)}),
                        "is 30000x30000; images are read up to 4096x4096"),
    "not square": (lambda p: make_zip(p, {NAMES[0]: png_bytes(np.zeros((8, 16), np.uint8))}), "is 16x8; EDM datasets"),
    "not a power of two": (lambda p: make_zip(p, {NAMES[0]: png_bytes(np.zeros((12, 12), np.uint8))}),
                           "is 12x12; EDM datasets hold square images with a power-of-two side"),
    "rgba": (lambda p: make_zip(p, {NAMES[0]: png_bytes(np.zeros((8, 8, 4), np.uint8))}), "is a 8-bit RGBA PNG"),
    "16-bit": (lambda p: make_zip(p, {NAMES[0]: png_bytes(np.zeros((8, 8), np.uint16))}), "is a 16-bit gray PNG"),
    "palette": (lambda p: make_zip(p, {NAMES[0]: png_bytes(np.zeros((8, 8), np.uint8), "P")}), "-bit palette PNG"),
    "truncated zip": (lambda p: (p.write_bytes(open(gray_zip(p, labels=None), "rb").read()[:-40]), str(p))[1],
                      "is not a zip file"),
    "not a png": (lambda p: make_zip(p, {NAMES[0]: b"hello, not an image"}), "is not a PNG image"),
    "png and npy": (lambda p: make_zip(p, {NAMES[0]: png_bytes(GRAY[0]), "00000/img1.npy": npy_bytes(GRAY[0])}),
                    "mixes .png images"),
    "object npy": (lambda p: make_zip(p, {"a.npy": npy_bytes(np.array([[None, 1]], dtype=object))}),
                   "latent datasets hold numeric"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_zip_is_one_line(tmp_path, case):
    build, message = MALFORMED[case]
    path = build(tmp_path / "bad.zip")
    with pytest.raises(DatasetError, match=message):
        ImageZipDataset(path)


def test_mixed_sizes_and_damage_are_found_before_decoding(tmp_path):
    entries = {NAMES[0]: png_bytes(GRAY[0]), NAMES[1]: png_bytes(np.zeros((16, 16), np.uint8)),
               NAMES[2]: png_header_only(8, 8, colour_type=0), NAMES[3]: png_header_only(30000, 30000),
               NAMES[4]: png_bytes(np.zeros((8, 8, 3), np.uint8))}
    data = ImageZipDataset(make_zip(tmp_path / "mixed.zip", entries), what="--data")
    assert data.batch([0])[0].shape == (1, 1, 8, 8)  # the first image sets the format
    with pytest.raises(DatasetError, match=r"img00000001.png is 16x16 gray, but 00000/img00000000.png is 8x8 gray"):
        data.batch([0, 1])
    with pytest.raises(DatasetError, match=r"img00000002.png is damaged"):
        data.batch([2])
    with pytest.raises(DatasetError, match=r"img00000003.png is 30000x30000"):
        data.batch([3])
    with pytest.raises(DatasetError, match=r"is 8x8 RGB, but .* is 8x8 gray"):
        data.batch([4])
    with pytest.raises(DatasetError, match=r"^--data .*mixed.zip: 00000/img00000001.png is 16x16"):
        data.verify()


def test_deflated_zips_read_and_damage_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, name in enumerate(NAMES):
            zf.writestr(name, png_bytes(GRAY[i]))
        zf.writestr("dataset.json", json.dumps({"labels": [[n, i] for i, n in enumerate(NAMES)]}))
    data = ImageZipDataset(path)
    assert torch.equal(data.batch([4, 1])[0][:, 0], torch.from_numpy(GRAY[[4, 1]])) and data.label_dim == 5
    stored = tmp_path / "stored.zip"
    raw = bytearray(open(gray_zip(stored, labels=None), "rb").read())
    at = raw.index(b"IDAT", raw.index(NAMES[3].encode())) + 10  # inside image 3's pixel data
    raw[at] ^= 0xFF
    stored.write_bytes(bytes(raw))
    data = ImageZipDataset(stored)
    assert data.batch([2])[0].shape == (1, 1, 8, 8)
    with pytest.raises(DatasetError, match="img00000003.png is damaged .*checksum"):
        data.batch([3])


def test_oversized_entry_is_refused_unread(tmp_path):
    path = make_zip(tmp_path / "big.zip", {NAMES[0]: png_bytes(GRAY[0]), NAMES[1]: png_bytes(GRAY[1]) + bytes(1 << 17)})
    with pytest.raises(DatasetError, match=r"img00000001.png is \d+ bytes, far more than a 8x8 gray image needs"):
        ImageZipDataset(path).batch([1])


def test_write_dataset_refuses_and_leaves_nothing(tmp_path):
    dest = tmp_path / "out.zip"
    with pytest.raises(DatasetError, match="3 labels for 2 images"):
        write_dataset(dest, np.zeros((2, 8, 8, 1), np.uint8), [0, 1, 2])
    with pytest.raises(DatasetError, match=r"image 1 is .* but image 0 is"):
        write_dataset(dest, iter([np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8)]))
    with pytest.raises(DatasetError, match="12x12"):
        write_dataset(dest, np.zeros((1, 12, 12, 3), np.uint8))
    with pytest.raises(DatasetError, match="non-negative integer"):
        write_dataset(dest, np.zeros((1, 8, 8, 3), np.uint8), [-1])
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------ against a teacher


def test_check_matches(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    write_dataset(tmp_path / "cifar10.zip", images, [0, 9, 3, 3])
    data = ImageZipDataset(tmp_path / "cifar10.zip")
    data.check_matches(32, 3, 10)
    data.check_matches(32, 3, 0)  # labels are ignored by an unconditional teacher
    with pytest.raises(DatasetError) as error:
        data.check_matches(16, 1, 0, what="--data")
    assert str(error.value) == (f"--data {data.path} holds 32x32 RGB images with 10 labels, but the teacher is 16x16 "
                                f"with 1 channel and 0 labels; use the teacher's training set")
    with pytest.raises(DatasetError, match="with 10 labels, but the teacher is 32x32 with 3 channels and 1000 labels"):
        data.check_matches(32, 3, 1000)
    unlabelled = ImageZipDataset(gray_zip(tmp_path / "g.zip", labels=None))
    unlabelled.check_matches(8, 1, 0)
    with pytest.raises(DatasetError, match="8x8 gray images with 0 labels, but the teacher is 8x8 with 1 channel and 10"):
        unlabelled.check_matches(8, 1, 10)


def test_label_sampler(tmp_path):
    path = gray_zip(tmp_path / "g.zip", labels=[[n, 2 * (i % 2)] for i, n in enumerate(NAMES)])
    sample = label_sampler(path, 5)
    drawn = sample(400, torch.Generator().manual_seed(0))
    assert drawn.shape == (400, 5) and set(drawn.argmax(1).tolist()) == {0, 2}
    with pytest.raises(DatasetError, match="--labels-from .* has 3 labels, which cannot feed a teacher with 2 classes"):
        label_sampler(path, 2)
    with pytest.raises(DatasetError, match="has no labels"):
        label_sampler(gray_zip(tmp_path / "u.zip", labels=None), 5)


# ------------------------------------------------------------------------------------------ threads and processes


def _labelled(tmp_path, n=64):
    images = RNG.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    write_dataset(tmp_path / "d.zip", images, np.arange(n) % 7)
    return ImageZipDataset(tmp_path / "d.zip"), images


@pytest.mark.parametrize("opened_first", [True, False])
def test_threads_read_at_once(tmp_path, opened_first):
    """Positioned reads share no file position: threads reading at once all get the right images."""
    data, images = _labelled(tmp_path)
    expected = torch.from_numpy(images).permute(0, 3, 1, 2)
    if opened_first:
        data.batch([0])
    failures, start = [], threading.Barrier(6)

    def reader(offset):
        start.wait()
        rng = np.random.default_rng(offset)
        for _ in range(30):
            idx = rng.integers(0, len(data), 8).tolist()
            x, y = data.batch(idx)
            if not torch.equal(x, expected[idx]) or not torch.equal(y.argmax(1), torch.tensor(idx) % 7):
                failures.append(offset)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    data.close()
    assert torch.equal(data.batch([5])[0], expected[[5]])  # reopens after close


def test_forked_dataloader_workers_and_pickling(tmp_path):
    data, images = _labelled(tmp_path)
    data.batch([0, 1])  # the parent has an open handle, which forked workers must not share
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=2, multiprocessing_context="fork")
    x = torch.cat([batch for batch, _ in loader])
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone.batch([3])[0], data.batch([3])[0]) and np.array_equal(clone.labels, data.labels)


# ------------------------------------------------------------------------------------------ command line


def run_cli(*argv):
    """The command in a fresh process: (exit status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "full.dataset", *map(str, argv)], capture_output=True, text=True,
                            timeout=120)
    return result.returncode, result.stdout, result.stderr


def cli(capsys, *argv):
    """`full.dataset.main` in this process (argparse's exit included): (exit status, stdout, stderr)."""
    return run_main(dataset_cli.main, capsys, *argv)



@pytest.mark.parametrize("case", ["labels a number", "negative label", "missing file", "30000x30000 png",
                                  "not square", "not a zip"])
def test_info_reports_malformed_zips_in_one_line(tmp_path, capsys, case):
    build, _ = MALFORMED[case]
    assert_one_line_error(cli(capsys, "info", build(tmp_path / "bad.zip")), "bad.zip")


def test_info_in_a_fresh_process(tmp_path):
    assert_one_line_error(run_cli("info", MALFORMED["30000x30000 png"][0](tmp_path / "bad.zip")), "30000x30000")


def test_info_checks_every_header(tmp_path, capsys):
    path = make_zip(tmp_path / "mixed.zip", {NAMES[0]: png_bytes(GRAY[0]), NAMES[1]: png_bytes(np.zeros((16, 16), np.uint8))})
    assert_one_line_error(cli(capsys, "info", path), "img00000001.png is 16x16 gray")
    code, out, _ = cli(capsys, "info", gray_zip(tmp_path / "g.zip", labels=[[n, 1] for n in NAMES]))
    assert code == 0 and json.loads(out) == {"path": str(tmp_path / "g.zip"), "images": 5, "resolution": 8,
                                             "channels": 1, "label_dim": 2, "kind": "png"}


@pytest.mark.parametrize("resolution, needle", [("0", "argument --resolution: 0 is not allowed"),
                                                ("12", "12 is not a power of two"),
                                                ("-16", "-16 is not allowed"), ("8192", "8192 is not allowed"),
                                                ("nan", "'nan' is not a whole number")])
def test_convert_refuses_resolutions(tmp_path, capsys, resolution, needle):
    result = cli(capsys, "convert", "--source", "mnist5k", "--dest", tmp_path / "m.zip", "--resolution", resolution)
    assert_one_line_error(result, needle, "(see python -m full.dataset convert --help)")
    assert os.listdir(tmp_path) == []


def test_convert_folder_errors_leave_nothing(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(folder / "b.png")
    dest = tmp_path / "out" / "mine.zip"
    assert_one_line_error(run_cli("convert", "--source", f"folder:{folder}", "--dest", dest, "--resolution", "8"),
                          "b.png is 24x16", "crop the images to squares")
    (folder / "b.png").unlink()
    (folder / "c.png").write_bytes(b"not an image")
    assert_one_line_error(cli(capsys, "convert", "--source", f"folder:{folder}", "--dest", dest),
                          "c.png is not a readable image")
    assert not dest.exists()
    assert_one_line_error(cli(capsys, "convert", "--source", "bogus", "--dest", dest), "unknown --source 'bogus'")
    assert_one_line_error(cli(capsys, "convert", "--source", f"folder:{folder}", "--dest", tmp_path),
                          "must be a .zip file")
    (folder / "c.png").unlink()
    assert cli(capsys, "convert", "--source", f"folder:{folder}", "--dest", dest, "--resolution", "8")[0] == 0
    assert ImageZipDataset(dest).resolution == 8
