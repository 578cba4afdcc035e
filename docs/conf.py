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
html_theme_options = {"description": "activation functions, compiled", "page_width": "1200px"}

# The generated reference (`actdsl docs docs/`) and the build itself are not pages of this site.
exclude_patterns = ["_build", "README.md", "activations.md", "gallery", "Thumbs.db", ".DS_Store"]
# numerics, autodiff, benchmarks and security pages are written elsewhere: each is listed by a
# glob in index.md, so the site builds with or without them
suppress_warnings = ["myst.header", "toc.empty_glob"]
