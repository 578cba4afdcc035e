"""The command line as people expect it: --version, list, plain-text show, stated defaults,
progress bars only on a terminal, and spec errors that know PyTorch's habits."""
import io
import json

import pytest

import actdsl
from actdsl.cli import main, progress
from actdsl.registry import REGISTRY


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"actdsl {actdsl.__version__}"


def test_list_text_and_json(capsys):
    code, out, _ = cli(capsys, "list")
    assert code == 0
    for d in REGISTRY.definitions():
        assert d.key in out
    line = next(l for l in out.splitlines() if l.startswith("prelu "))
    assert "learnable r" in line and "leaky-relu" in line and "elementwise" in line
    code, out, _ = cli(capsys, "list", "--json")
    entries = {e["key"]: e for e in json.loads(out)}
    assert set(entries) == {d.key for d in REGISTRY.definitions()}
    assert entries["softmax"]["kind"] == "row-wise" and entries["relu"]["kind"] == "elementwise"
    assert entries["trel"]["aliases"] == ["rect:minmax"]
    assert entries["maxout"]["parameters"] == ["m", "b"] and entries["maxout"]["arguments"] == {"pieces": 2}
    assert entries["leaky_relu"]["arguments"] == {"negative_slope": 0.01}


def test_show_is_plain_text_unless_latex(capsys):
    code, out, _ = cli(capsys, "show", "sigmoid")
    assert code == 0 and "\\" not in out and "σ(z)" in out and "(1 - σ(z))" in out
    code, out, _ = cli(capsys, "show", "selu", "--latex")
    assert r"\alpha" in out and "α = 1.6732632423543772848" in out


def test_help_states_defaults(capsys):
    for argv, default in ((["bench", "--help"], "(default: 1024x1024)"),
                          (["bench", "--help"], "(default: numba)"),
                          (["plot", "--help"], "(default: -5.0)"),
                          (["table", "--help"], "(default: markdown)")):
        with pytest.raises(SystemExit):
            main(argv)
        assert default in " ".join(capsys.readouterr().out.split())
    for command in ("plot", "check", "bench", "show", "compile", "latex", "table", "docs", "list"):
        with pytest.raises(SystemExit):  # a required or repeatable option has no default to state
            main([command, "--help"])
        assert "default: None" not in capsys.readouterr().out, command


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    log = io.StringIO()
    progress(1, 2, "relu", stream=log)
    assert log.getvalue() == ""
    tty = _Terminal()
    progress(1, 2, "relu", stream=tty)
    progress(2, 2, "tanh", stream=tty)
    assert "[###############...............] 1/2" in tty.getvalue()
    assert tty.getvalue().endswith("\n")


@pytest.mark.parametrize("spec, hint", [
    ("leaky_relu(0.2)", "leaky_relu(negative_slope=0.2)"),
    ("tanh+elu(0.5)", "elu(alpha=0.5)"),
    ('gelu(approximate="tanh")', "'gelu:tanh'"),
    ("gelu(approximate='tanh')", "'gelu:tanh'"),
    ("relu(3)", "takes none"),
])
def test_spec_errors_recognise_pytorch_habits(spec, hint):
    with pytest.raises(actdsl.SpecSyntaxError) as e:
        actdsl.parse(spec)
    assert hint in str(e.value) and "^" in e.value.context


def test_hardtanh_bounds_must_be_ordered():
    with pytest.raises(actdsl.ParameterError, match="min_val .* must be below max_val"):
        actdsl.compile("hardtanh(min_val=1, max_val=-1)")
    with pytest.raises(actdsl.ParameterError):
        actdsl.compile("hardtanh(min_val=0.5, max_val=0.5)")
    k = actdsl.compile("hardtanh(min_val=-2, max_val=2)")
    assert k([-3.0, 0.5, 3.0]).tolist() == [-2.0, 0.5, 2.0]


@pytest.mark.parametrize("size", ["0x5", "5x0", "-1x4"])
def test_bench_refuses_empty_sizes(capsys, size):
    code, out, err = cli(capsys, "bench", "relu", "--backend", "numpy", f"--size={size}")
    assert code == 2 and "--size" in err and out == ""


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`actdsl list | head -1`: the pipe closes under the writer; exit quietly, as `ls | head`.
    Here the reader has left before the first write, so every run meets the closed pipe."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), ACTDSL_CACHE_DIR=str(tmp_path))
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "actdsl", "list"], cwd=root, env=env,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0
