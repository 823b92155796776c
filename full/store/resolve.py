"""Where a network file is: one decision for every loader (networks, teachers, detectors, the classifier).

A location is a path or a URL (``http``, ``https`` or ``file``). Its kind follows from its name:

- ``NAME.json``, ``NAME.safetensors`` or the stem ``NAME`` (with ``NAME.json`` beside it): our pair
  (`full.store.pair`), both files needed;
- ``*.pkl``: an EDM/EDM2/SiD network pickle (`full.store.edm_pickle`);
- ``*.pt``: a TorchScript detector (the FID Inception network).

A local file with another name is recognised by its first bytes (pickle or zip). URLs are downloaded once
into the cache (``$SID_CACHE``, else ``~/.cache/sid``), each file atomically, the two files of a pair under
one shared prefix so that they stay a pair; a URL without a suffix names a pair's stem. Every download has a
connect and read timeout of ``$SID_DOWNLOAD_TIMEOUT`` seconds (default 60). Relative paths that do not
exist in the working directory are looked up in the repository, for the shipped ``assets/``.

Nothing found is one uniform `CheckpointError`: ``--teacher X: no such file; give an EDM .pkl,
NAME.safetensors/NAME.json or the stem NAME, or an http(s) URL``.
"""
from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from full.errors import CheckpointError, ConfigError, SidError
from full.store.atomic import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_VARIABLE = "SID_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0

PAIR, PICKLE, TORCHSCRIPT = "pair", "edm-pickle", "torchscript"
NETWORK_KINDS = (PICKLE, PAIR)
_PAIR_SUFFIXES = (".json", ".safetensors")
_SUFFIX_KINDS = {".json": PAIR, ".safetensors": PAIR, ".pkl": PICKLE, ".pt": TORCHSCRIPT}
_HINTS = {PICKLE: "an EDM .pkl", TORCHSCRIPT: "a TorchScript .pt", PAIR: "NAME.safetensors/NAME.json or the stem NAME"}
_NAMES = {PICKLE: "an EDM network pickle", TORCHSCRIPT: "a TorchScript file", PAIR: "a safetensors + JSON pair"}


class DownloadError(SidError, OSError):
    """A URL that could not be downloaded (unreachable, refused, timed out)."""


@dataclass(frozen=True)
class Location:
    """A resolved network location: its kind and local file(s).

    ``path`` is the file to open: the ``.json`` of a pair, the ``.pkl`` or the ``.pt``; a pair's weights are
    ``weights`` (``NAME.safetensors``). ``given`` is what the user wrote and ``what`` the option it came from.
    """

    kind: str
    path: Path
    given: str
    what: str

    @property
    def weights(self) -> Path:
        if self.kind != PAIR:
            raise ValueError(f"a {self.kind} has no separate weights file")
        return self.path.with_suffix(".safetensors")


def cache_dir() -> Path:
    """$SID_CACHE, else ~/.cache/sid."""
    return Path(os.environ.get("SID_CACHE", Path.home() / ".cache" / "sid"))


def download_timeout() -> float:
    """Connect and read timeout of downloads in seconds: ``$SID_DOWNLOAD_TIMEOUT``, default 60."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r}: expected a positive number of seconds, e.g. 60")
    return value


def is_url(text: str | os.PathLike) -> bool:
    text = os.fspath(text)
    return "://" in text and text.split("://", 1)[0] in {"http", "https", "file"}


def _url_path(url: str) -> str:
    """The path part of a URL (no query or fragment)."""
    return urllib.parse.urlsplit(url).path


def _strip_pair_suffix(name: str) -> str:
    for suffix in _PAIR_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _with_suffix(url: str, suffix: str) -> str:
    """``url`` with its path's pair suffix (if any) replaced by ``suffix``; query and fragment kept."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=_strip_pair_suffix(parts.path) + suffix))


def cached_name(url: str) -> Path:
    """Where ``url`` is cached: files of one URL directory share a prefix, so a pair stays a pair."""
    path = url.split("?")[0]
    return cache_dir() / (hashlib.sha256(os.path.dirname(path).encode()).hexdigest()[:12] + "-" + os.path.basename(path))


def download(url: str) -> Path:
    """The cached copy of ``url``, downloaded atomically on first use with the timeout of `download_timeout`."""
    target = cached_name(url)
    if target.exists():
        return target
    timeout = download_timeout()
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        from tqdm import tqdm
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(_url_path(url)),
                      leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    try:
        atomic_write(target, write)
    except (TimeoutError, socket.timeout):
        raise DownloadError(f"cannot download {url}: no answer within {timeout:g} s (set {TIMEOUT_VARIABLE} to "
                            "wait longer); download it yourself and pass the local path") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP error {error.code} ({error.reason})"
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DownloadError(f"cannot download {url}: no answer within {timeout:g} s (set {TIMEOUT_VARIABLE} "
                                "to wait longer); download it yourself and pass the local path") from None
        raise DownloadError(f"cannot download {url}: {reason}; download it yourself and pass the local path") from None
    return target


def fetch(location: str | os.PathLike) -> Path:
    """A local path for a single file: URLs are downloaded into the cache (once); a relative path missing from
    the working directory is looked up in the repository. The path returned may not exist."""
    location = os.fspath(location)
    if is_url(location):
        return download(location)
    return _local(location, lambda p: p.exists()) or Path(location)


def _local(location: str, exists) -> Path | None:
    """``location`` if ``exists(path)``, else the same relative path under the repository, else None."""
    path = Path(location)
    if exists(path):
        return path
    if not path.is_absolute() and exists(REPO_ROOT / path):
        return REPO_ROOT / path
    return None


def _sniff(path: Path) -> str | None:
    """Kind of a file named without a known suffix, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head[:1] == b"\x80":
        return PICKLE
    if head == b"PK\x03\x04":
        return TORCHSCRIPT
    return None


def _hint(kinds) -> str:
    return ", ".join(_HINTS[k] for k in kinds) + ", or an http(s) URL"


def _not_found(location: str, what: str, kinds) -> CheckpointError:
    return CheckpointError(f"{what} {location}: no such file; give {_hint(kinds)}")


def _kind_of_name(name: str) -> str | None:
    for suffix, kind in _SUFFIX_KINDS.items():
        if name.endswith(suffix):
            return kind
    return None


def locate(location: str | os.PathLike, what: str = "network", kinds=NETWORK_KINDS) -> Location:
    """Resolve ``location`` (path or URL) of one of ``kinds`` to local files, downloading URLs once.

    ``what`` names the option the location came from (``"--teacher"``) in every message. Raises
    `CheckpointError` when nothing is there or the kind is not accepted, `DownloadError` when a URL fails.
    """
    given = "" if location is None else os.fspath(location)
    if not isinstance(given, str) or not given:
        raise CheckpointError(f"{what} is empty; give {_hint(kinds)}")
    if is_url(given):
        return _locate_url(given, what, kinds)
    kind = _kind_of_name(given)
    if kind == PAIR:
        return _pair(_strip_pair_suffix(given), given, what, kinds)
    if kind is not None:
        path = _local(given, Path.is_file)
        if path is None:
            raise _not_found(given, what, kinds)
        return _accept(Location(kind, path, given, what), kinds)
    path = _local(given, Path.is_file)
    if path is not None:  # a file named otherwise: recognise it by its content
        sniffed = _sniff(path)
        if sniffed is None:
            raise CheckpointError(f"{what} {given}: not a network file (neither a pickle nor a TorchScript zip); "
                                  f"give {_hint(kinds)}")
        return _accept(Location(sniffed, path, given, what), kinds)
    return _pair(given, given, what, kinds)


def _pair(stem: str, given: str, what: str, kinds) -> Location:
    json_path = _local(stem + ".json", Path.is_file)
    weights = _local(stem + ".safetensors", Path.is_file)
    if json_path is None and weights is None:
        raise _not_found(given, what, kinds)
    if json_path is None or weights is None or json_path.parent != weights.parent:
        missing = stem + (".json" if json_path is None else ".safetensors")
        raise CheckpointError(f"{what} {given}: missing {missing}; a pair is NAME.safetensors plus NAME.json, "
                              "written together")
    return _accept(Location(PAIR, json_path, given, what), kinds)


def _accept(found: Location, kinds) -> Location:
    if found.kind not in kinds:
        raise CheckpointError(f"{found.what} {found.given} is {_NAMES[found.kind]}, which {found.what} does not "
                              f"take; give {_hint(kinds)}")
    return found


def _locate_url(url: str, what: str, kinds) -> Location:
    kind = _kind_of_name(_url_path(url)) or PAIR  # a URL without a suffix names a pair's stem
    _accept(Location(kind, Path(), url, what), kinds)  # refuse a wrong kind before downloading anything
    if url.startswith("file://"):  # a missing local file gets the same message as a missing path
        local = urllib.request.url2pathname(_url_path(url))
        stem = _strip_pair_suffix(local)
        names = [local] if kind != PAIR else [stem + ".json", stem + ".safetensors"]
        if not any(os.path.isfile(name) for name in names):
            raise _not_found(url, what, kinds)
    if kind != PAIR:
        return Location(kind, download(url), url, what)
    download(_with_suffix(url, ".safetensors"))  # weights first, description last, as a save writes them
    return Location(PAIR, download(_with_suffix(url, ".json")), url, what)
