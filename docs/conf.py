"""Sphinx configuration of actdsl's documentation: `make docs` builds it into docs/_build/html."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import actdsl  # noqa: E402

project = "actdsl"
author = "the actdsl authors"
copyright = "the actdsl authors (MIT licence)"
release = version = actdsl.__version__

extensions = ["myst_parser", "actdsl.sphinx"]
myst_enable_extensions = ["dollarmath"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
# Math becomes MathML while the pages are built (latex2mathml): no script, no network at view time.
html_math_renderer = "actdsl-mathml"
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["actdsl.css"]
html_theme_options = {"description": "activation functions, compiled", "page_width": "1280px",
                      "body_max_width": "960px"}

# The generated reference (`actdsl docs docs/`) and the build itself are not pages of this site.
exclude_patterns = ["_build", "README.md", "activations.md", "gallery", "Thumbs.db", ".DS_Store"]
suppress_warnings = ["myst.header"]

# Pages written alongside this site (numerics, autodiff, benchmarks, security) are listed in
# index.md's toctree like every other page; while one does not exist yet, its line is dropped
# when index.md is read, so the build passes with or without it.
OPTIONAL_PAGES = ("numerics", "autodiff", "benchmarks", "security")


def _drop_missing_pages(app, docname, source):
    if docname != "index":
        return
    here = Path(app.srcdir)
    missing = {p for p in OPTIONAL_PAGES if not (here / f"{p}.md").exists()}
    source[0] = "\n".join(line for line in source[0].split("\n") if line.strip() not in missing)


def setup(app):
    app.connect("source-read", _drop_missing_pages)
