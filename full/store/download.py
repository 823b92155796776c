"""Compatibility names for callers of the earlier download module; the resolver is `full.store.resolve`.

`fetch` (one file, path or URL, downloaded once into the cache with a timeout), `is_url`, `cache_dir` and
`REPO_ROOT` are the resolver's own functions.
"""
from full.store.resolve import REPO_ROOT, DownloadError, cache_dir, fetch, is_url

__all__ = ["REPO_ROOT", "DownloadError", "cache_dir", "fetch", "is_url"]
