"""The python code blocks of README.md and the documentation pages named in FILES run as written.

Each file's blocks run in order, in one namespace (as a reader goes down the page), in a fresh
process (custom activations and imports do not leak into the test session). A block that fails
on the current text is listed in KNOWN_WRONG by a hash of its text, with what is wrong: it is an
xfail(strict=True), so fixing the text (which changes the hash) makes it an ordinary test, and a
listed block that starts passing fails the suite.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ["README.md", "docs/autodiff.md", "docs/integrations.md", "docs/custom.md"]

#: sha256[:12] of a block's text -> why it fails as written (README.md is not ours to edit)
KNOWN_WRONG: dict = {}

RUNNER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
results = []
for text in blocks:
    try:
        exec(compile(text, "<markdown block>", "exec"), namespace)
        results.append(None)
    except BaseException:
        results.append(traceback.format_exc(limit=3)[-1500:])
print("RESULTS" + json.dumps(results))
"""


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every ```python fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, start = [], None
    for i, line in enumerate(lines):
        if start is None and re.match(r"^```python\s*$", line):
            start = i + 1
        elif start is not None and line.startswith("```"):
            blocks.append((start + 1, "\n".join(lines[start:i]) + "\n"))
            start = None
    return blocks


def block_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_results: dict = {}


def run_file(name: str) -> list:
    if name not in _results:
        blocks = [t for _, t in python_blocks(ROOT / name)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
        proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks),
                              capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=900)
        marker = proc.stdout.rfind("RESULTS")
        assert marker >= 0, proc.stderr[-3000:]
        _results[name] = json.loads(proc.stdout[marker + len("RESULTS"):])
    return _results[name]


def _cases():
    for name in FILES:
        path = ROOT / name
        if not path.exists():
            continue
        for i, (line, text) in enumerate(python_blocks(path)):
            reason = KNOWN_WRONG.get(block_id(text))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, i, id=f"{name}:{line}", marks=marks)


@pytest.mark.parametrize("name,index", list(_cases()))
def test_block_runs_as_written(name, index):
    error = run_file(name)[index]
    assert error is None, f"{name} block {index + 1} fails as written:\n{error}"


def test_the_docs_page_has_examples():
    assert len(python_blocks(ROOT / "docs/autodiff.md")) >= 4
