"""Shared pieces of the explorer pages: thread limits, cached proofs and models, figure display."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402


def setup() -> None:
    """One torch thread per session, so concurrent sessions do not oversubscribe the cores."""
    torch.set_num_threads(1)


@st.cache_resource
def proofs() -> dict:
    """The sympy proofs by name (derived once per server; read-only)."""
    from toy.proofs import all_proofs
    return {p.name: p for p in all_proofs()}


@st.cache_resource
def network(path: str):
    """A network loaded once per server (read-only: eval mode, frozen)."""
    from full.store.network_file import load_network
    return load_network(path)


def show(fig) -> None:
    """Render a matplotlib figure and free it."""
    st.pyplot(fig)
    plt.close(fig)
