"""actdsl.table, actdsl.plot and the actdsl command."""
import html.parser
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import actdsl
from actdsl.registry import REGISTRY
from actdsl.table import FORMATS, SEED_KEYS, rows, table

ROOT = Path(__file__).resolve().parent.parent
KEYS = [d.key for d in REGISTRY.definitions()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_registered_key_has_a_row(fmt):
    text = table(fmt)
    for key in KEYS:
        assert (key.replace("_", r"\_") if fmt == "latex" else key) in text, (fmt, key)
    assert "Seed corrections" in text


def test_seed_rows_come_first_in_the_seeds_order_with_its_descriptions():
    rs = rows()
    assert [r.key for r in rs[:19]] == list(SEED_KEYS)
    desc = {r.key: r.description for r in rs}
    assert desc["trel"] == "truncated rectified linear" and desc["norm:z"] == "z-score normalization"
    assert desc["softmax"] == "categorical distribution" and desc["maxout"] == "piecewise linear"
    assert {r.key: r.kind for r in rs}["norm:std"] == "row-wise"


# hand-written: what the seed's formulas are in actdsl's notation
SEED_LATEX = {
    "linear": "z",
    "relu": r"\max\left(0, z\right)",
    "rect:min": r"\min\left(1, z\right)",
    "sigmoid": r"\frac{1}{1 + e^{- z}}",
    "softplus": r"\log\left(1 + e^{z}\right)",
    "norm:mean": r"z - \bar{z}",
    "norm:max": r"\frac{z}{\varepsilon + \max\left|z\right|}",
}


@pytest.mark.parametrize("key", sorted(SEED_LATEX))
def test_latex_of_seed_rows(key):
    row = next(r for r in rows() if r.key == key)
    assert row.latex() == SEED_LATEX[key]
    assert f"${SEED_LATEX[key]}$" in table("latex")


class _Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.maths, self._in_td, self.stack = [], 0, False, []

    VOID = {"meta", "br", "img", "link", "hr", "input"}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self.rows[-1].append("")
        if tag == "math":
            self.maths += 1

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"mismatched </{tag}> after {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        if "td" in self.stack and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def test_html_is_a_wellformed_standalone_page_with_mathml():
    text = table("html")
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text and "http" not in text
    p = _Cells()
    p.feed(text)
    body = [r for r in p.rows if r]
    assert len(body) == len(KEYS) and all(len(r) == 7 for r in body)
    # g and g' per row, and one per symbol the row's "where" note names (α = ..., y_i, s)
    assert p.maths == 2 * len(KEYS) + sum(len(r.symbols) for r in rows())
    assert {r[0] for r in body} == set(KEYS)


def test_custom_activations_appear():
    class Cube(actdsl.Activation):
        """z cubed."""

        def __call__(self, z):
            return z ** 3

    try:
        assert "cube" in table("markdown") and "z^{3}" in table("markdown")
        assert next(r for r in rows() if r.key == "cube").custom
    finally:
        actdsl.unregister("cube")


def test_plot_writes_a_png_of_the_expected_size(tmp_path):
    pytest.importorskip("matplotlib")
    from actdsl.plot import plot
    for spec in ("prelu", "softmax"):
        path = tmp_path / f"{spec}.png"
        plot(spec, path, figsize=(5, 2.5), dpi=80)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (400, 200)
    with pytest.raises(actdsl.ActdslError, match="lo < hi"):
        plot("relu", lo=1, hi=0)


def run(*args, check_rc=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "actdsl", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def test_cli_help_for_every_command():
    out = run("--help", check_rc=0).stdout
    for cmd in ("demo", "show", "compile", "check", "table", "plot", "bench", "docs", "latex"):
        assert cmd in out
        assert "usage: actdsl " + cmd in run(cmd, "--help", check_rc=0).stdout


def test_cli_errors_go_to_stderr_with_their_position_on_one_line_and_exit_2():
    """Issue 19: one line on stderr; the caret picture of the Python error becomes its column."""
    p = run("show", "tanh+nrom:z", check_rc=2)
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert "did you mean 'norm:z'" in p.stderr and "column 6 of 'tanh+nrom:z'" in p.stderr
    p = run("compile", "relu+(", check_rc=2)
    assert len(p.stderr.splitlines()) == 1
    assert "column 6" in p.stderr and "'relu+('" in p.stderr
    run("table", "--format", "pdf", check_rc=2)       # argparse: bad option


def test_cli_commands_do_their_job(tmp_path):
    out = run("show", "tanh+norm:z", check_rc=0).stdout
    assert "row-wise" in out and "tanh" in out
    assert "def forward_rows" in run("compile", "softmax", "--backend", "numba", check_rc=0).stdout
    assert "| `relu` |" in run("table", "--seed", check_rc=0).stdout
    assert "PASS" in run("check", "relu", "--backend", "numpy", "--dtype", "float32", check_rc=0).stdout
    png = tmp_path / "g.png"
    assert "wrote" in run("plot", "gelu", "-o", str(png), check_rc=0).stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = run("bench", "tanh", "--backend", "numpy", "--size", "64x64", "--repeat", "3",
              check_rc=0).stdout
    assert "x memcpy" in out
    run("docs", str(tmp_path / "docs"), check_rc=0)
    assert (tmp_path / "docs" / "activations.html").exists()
    assert len(list((tmp_path / "docs" / "gallery").glob("*.png"))) == len(
        [d for d in REGISTRY.definitions() if d.builtin])


def test_cli_check_exits_1_on_a_failing_check():
    code = ("import actdsl, actdsl.cli, sys\n"
            "class Bad(actdsl.Activation):\n"
            "    def __call__(self, z):\n        return z ** 2\n"
            "    def derivative(self, z):\n        return z\n"
            "sys.exit(actdsl.cli.main(['check', 'bad', '--backend', 'numpy', '--dtype', 'float64']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert p.returncode == 1 and "FAIL" in p.stdout


def test_the_committed_reference_tables_are_what_the_generator_writes_today():
    """docs/activations.md and .html are generated (``actdsl docs docs/``); a change to the
    formulas shows here, so the published pages never drift from the code (they had: relu6' and
    hardtanh' had come apart into two 0 branches without the pages saying so). In a fresh
    process: other tests register custom activations, which would join the table."""
    code = ("from actdsl.table import table; import sys; "
            "sys.stdout.write(table('markdown') + '\\0' + table('html'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         encoding="utf-8", check=True).stdout
    markdown, page = out.split("\0")
    assert markdown == (ROOT / "docs" / "activations.md").read_text(encoding="utf-8")
    assert page == (ROOT / "docs" / "activations.html").read_text(encoding="utf-8")
