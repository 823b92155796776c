"""SiD explorer: `streamlit run apps/explorer.py`.

Five pages: the score identities, Proposition 4's failure case (and the lagging fake score), live toy distillation,
full-scale runs, and how to choose alpha.
"""
from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "explorer_pages"  # a folder named pages/ would also be auto-listed by Streamlit

st.set_page_config(page_title="SiD explorer", layout="wide")
st.navigation([
    st.Page(PAGES / "identities.py", title="Identities", default=True),
    st.Page(PAGES / "failure_case.py", title="The failure case (Prop. 4)"),
    st.Page(PAGES / "toy_distillation.py", title="Toy distillation, live"),
    st.Page(PAGES / "runs.py", title="Full-scale runs"),
    st.Page(PAGES / "choosing_alpha.py", title="How to choose alpha"),
]).run()
