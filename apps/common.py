"""Shared pieces of the explorer pages: thread limits, cached proofs and models, thread-safe figures, LaTeX layout.

Streamlit runs every browser session's script in its own thread of one server process. matplotlib's text layout
(the mathtext parser behind log-axis tick labels such as 10^{-1}, the font cache) is process-global and not safe
to use from two threads at once: concurrent sessions replaced plots with mathtext ParseFatalExceptions. So every
figure is built *and* rendered to PNG while holding one process-wide lock (`render_png`), with the
object-oriented `matplotlib.figure.Figure` (never pyplot's global figure registry); only the finished PNG bytes
leave the lock.
"""
from __future__ import annotations

import io
import threading
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import streamlit as st  # noqa: E402
import sympy as sp  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FIGURE_LOCK = threading.RLock()  # held while any figure of any session is built or rendered
DPI = 110


def setup() -> None:
    """One torch thread per session, so concurrent sessions do not oversubscribe the cores; scrollable LaTeX."""
    torch.set_num_threads(1)
    # KaTeX does not break display math: long formulas scroll inside their column instead of running off it.
    st.html("<style>.katex-display{overflow-x:auto;overflow-y:hidden;padding:0.2em 0}</style>")


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


def render_png(draw: Callable[[Figure], None], figsize: tuple[float, float], dpi: int = DPI) -> bytes:
    """Build a figure with `draw(fig)` and render it to PNG bytes, holding `FIGURE_LOCK` throughout."""
    with FIGURE_LOCK:
        fig = Figure(figsize=figsize, layout="constrained")
        draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def show(draw: Callable[[Figure], None], figsize: tuple[float, float], caption: str | None = None) -> None:
    """Render a figure (see `render_png`) and display it at the column's width."""
    st.image(render_png(draw, figsize), caption=caption, width="stretch")


def latex(expr: sp.Expr | str, prefix: str = "", width: int = 90) -> str:
    """LaTeX for `expr`, broken after top-level + or - into lines of about `width` characters of source, so a
    long sum wraps (an `aligned` block) instead of running off the column; `prefix` (e.g. "E[x] =") leads."""
    if isinstance(expr, str):
        return prefix + expr
    terms = sp.Add.make_args(expr) if isinstance(expr, sp.Add) else (expr,)
    if len(terms) == 1 or len(sp.latex(expr)) <= width:
        return prefix + sp.latex(expr)
    lines, current = [], ""
    for i, term in enumerate(sp.Add(*terms, evaluate=False).as_ordered_terms()):
        text = sp.latex(term)
        if i > 0:
            text = ("- " + text[1:].lstrip()) if text.startswith("-") else "+ " + text
        if current and len(current) + len(text) > width:
            lines.append(current)
            current = ""
        current += (" " if current else "") + text
    lines.append(current)
    body = r" \\ & ".join(lines)
    return r"\begin{aligned} " + prefix + " & " + body + r" \end{aligned}"
