"""Resolve a path or URL the user gives to a local file, downloading URLs once into a cache."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from full.store.atomic import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """$SID_CACHE, else ~/.cache/sid."""
    return Path(os.environ.get("SID_CACHE", Path.home() / ".cache" / "sid"))


def is_url(text: str) -> bool:
    return text.split("://", 1)[0] in {"http", "https", "file"} and "://" in text


def fetch(location: str) -> Path:
    """A local path for `location`: URLs are downloaded atomically into the cache (once); relative paths
    are looked up in the working directory, then in the repository (for shipped assets)."""
    if not is_url(location):
        path = Path(location)
        if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
            return REPO_ROOT / path
        return path
    url = location.split("?")[0]
    # Files from one URL directory share a prefix, so NAME.safetensors and NAME.json stay a pair.
    name = hashlib.sha256(os.path.dirname(url).encode()).hexdigest()[:12] + "-" + os.path.basename(url)
    target = cache_dir() / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)

    def download(tmp: str) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(location) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url), leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    try:
        atomic_write(target, download)
    except (urllib.error.URLError, OSError) as error:
        raise OSError(f"cannot download {location}: {getattr(error, 'reason', error)}; "
                      f"download it yourself and pass the local path") from None
    return target
