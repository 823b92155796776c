"""Full-scale SiD: EDM-compatible networks, safe checkpoint loading, the trainer, generation and metrics.

`full.method.losses` holds the SiD losses shared with `toy`; it imports only torch, and importing this
package does not import any network code.
"""

_CHECKPOINT_API = ("build_network", "load_network", "save_network")


def __getattr__(name: str):
    """PEP 562: `full.load_network` and friends import `full.store.network_file` (and the networks) on first use only."""
    if name in _CHECKPOINT_API:
        from full.store import network_file
        return getattr(network_file, name)
    raise AttributeError(f"module 'full' has no attribute {name!r}")
