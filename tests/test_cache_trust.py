"""The kernel cache cannot be turned against its user (issue 19): what Numba unpickles is
authenticated first, damaged files are rebuilt, a directory others can write is refused, and a
read-only cache without a writable home still works. See docs/security.md."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest

SPEC = "softsign+hardtanh+norm:mean"  # compiled by no other test: its files are this file's
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, actdsl
    x = np.linspace(-3, 3, 40).reshape(4, 10)
    k = actdsl.compile(sys.argv[1], backend="numba")
    ref = actdsl.compile(sys.argv[1])
    err = max(float(np.max(np.abs(k(x) - ref(x)))),
              float(np.max(np.abs(k.vjp(x, x) - ref.vjp(x, x)))))
    print(json.dumps({"err": err}))
""")


def run(cache, key, spec=SPEC, **env_changes):
    env = {**os.environ, "ACTDSL_CACHE_DIR": str(cache), "ACTDSL_CACHE_KEY": str(key),
           "PYTHONWARNINGS": "default", **env_changes}
    env = {k: v for k, v in env.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", SCRIPT, spec], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["err"] < 1e-12  # float64: the same function as the NumPy backend
    return out.stderr


def kernel_numba_files(cache):
    """Numba's files for SPEC's module (the cache also holds vmath's)."""
    from actdsl.compiler import _safe_key
    tag = f"Key {_safe_key(SPEC)}"
    (module,) = [f for f in cache.glob("actdsl_generated_*.py")
                 if tag in f.read_text(errors="replace")[:300]]
    files = sorted((cache / "__pycache__").glob(f"{module.stem}.*.nb[ic]"))
    assert any(f.suffix == ".nbi" for f in files) and any(f.suffix == ".nbc" for f in files)
    return files


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A cache filled by one process, and its key (copied into each test's own folder)."""
    base = tmp_path_factory.mktemp("filled")
    run(base / "cache", base / "keys" / "key")
    return base


@pytest.fixture
def cache(filled, tmp_path):
    shutil.copytree(filled, tmp_path / "c", symlinks=True)
    return tmp_path / "c" / "cache", tmp_path / "c" / "keys" / "key"


class Payload:
    """Unpickling this creates ``path``: stands for any code an attacker would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def math_numba_files(cache):
    """Numba's files for the math library's functions (vmath), kernels' and overloads' both."""
    from actdsl.backends import vmath
    files = sorted(f for m in (vmath._F32, vmath._F64)
                   for f in (cache / "__pycache__").glob(f"{m.__name__}.*.nb[ic]"))
    assert any(f.suffix == ".nbi" for f in files) and any(f.suffix == ".nbc" for f in files)
    return files


def test_every_numba_file_is_sealed(cache):
    cache_dir, key = cache
    everything = sorted((cache_dir / "__pycache__").glob("*.nb[ic]"))
    assert set(kernel_numba_files(cache_dir) + math_numba_files(cache_dir)) <= set(everything)
    for f in everything:
        assert f.with_name(f.name + ".mac").exists(), f
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("owner", [kernel_numba_files, math_numba_files])
@pytest.mark.parametrize("which", [".nbi", ".nbc"])
def test_planted_index_or_machine_code_never_runs(cache, tmp_path, which, owner):
    """Files replaced by pickles that run code when loaded, a kernel's or the math library's
    (whose functions a new kernel loads from the cache): the next process runs none of it,
    computes the right numbers and rebuilds the files."""
    cache_dir, key = cache
    sentinel = tmp_path / "PWNED"
    planted = [f for f in owner(cache_dir) if f.suffix == which]
    for f in planted:
        f.write_bytes(pickle.dumps(Payload(sentinel)))
    # the payload is live: unpickling one file, as Numba would, runs it
    probe = subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
                            str(planted[0])], capture_output=True, timeout=60)
    assert probe.returncode == 0 and sentinel.exists()
    sentinel.unlink()
    if owner is math_numba_files:  # the kernel compiles again, so it needs the math functions
        for f in kernel_numba_files(cache_dir):
            f.unlink()
    run(cache_dir, key)
    assert not sentinel.exists()
    for f in planted:  # rebuilt by Numba and sealed again
        assert b"PWNED" not in f.read_bytes()
        assert f.with_name(f.name + ".mac").exists()


def test_damaged_files_are_detected_and_rebuilt(cache):
    """A valid pickle of the wrong content, two machine-code files swapped with their MACs, and
    a MAC without its file: all found, deleted before Numba reads them, and rebuilt."""
    cache_dir, key = cache
    files = kernel_numba_files(cache_dir)
    index = next(f for f in files if f.suffix == ".nbi")
    index.write_bytes(pickle.dumps(("0.68.0", pickle.dumps((0, {"wrong": "content"})))))
    a, b = [f for f in files if f.suffix == ".nbc"][:2]
    for suffix in ("", ".mac"):
        pa, pb = a.with_name(a.name + suffix), b.with_name(b.name + suffix)
        da, db = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(db)
        pb.write_bytes(da)
    run(cache_dir, key)
    from actdsl import cache as c
    import hmac
    k = key.read_bytes()
    for f in kernel_numba_files(cache_dir):
        assert hmac.compare_digest(f.with_name(f.name + ".mac").read_bytes(),
                                   c._mac(k, f, f.read_bytes())), f


def test_read_only_cache_without_a_writable_home_still_serves(cache, tmp_path):
    cache_dir, key = cache
    blocker = tmp_path / "blocker"
    blocker.write_text("HOME points below a file: nothing can be created there")
    for root, dirs, names in os.walk(cache_dir):
        for name in names:
            os.chmod(os.path.join(root, name), 0o400)
        os.chmod(root, 0o500)
    try:
        stderr = run(cache_dir, key, HOME=str(blocker / "home"), XDG_CACHE_HOME=None,
                     XDG_CONFIG_HOME=None, NUMBA_CACHE_DIR=None)
        # and without the key (no home to keep it in): compiled in memory, with a warning
        stderr_no_key = run(cache_dir, blocker / "home" / "key", HOME=str(blocker / "home"),
                            XDG_CACHE_HOME=None, XDG_CONFIG_HOME=None, NUMBA_CACHE_DIR=None)
    finally:
        for root, dirs, names in os.walk(cache_dir):
            os.chmod(root, 0o700)
    assert "read-only" in stderr
    assert "no usable cache key" in stderr_no_key


# -- the directory and the key, in this process ---------------------------------------------
SOURCE = "def forward(z):\n    return z\n"


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    from actdsl import cache
    monkeypatch.setattr(cache, "_key_cache", {})
    monkeypatch.setattr(cache, "_warned", set())
    monkeypatch.setenv("ACTDSL_CACHE_KEY", str(tmp_path / "keys" / "key"))
    return cache


def _load_fresh(cache, source):
    name = f"actdsl_generated_{cache.source_key(source)}"
    sys.modules.pop(name, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = cache.load(source)
    sys.modules.pop(name, None)
    return module, " ".join(str(w.message) for w in caught)


@pytest.mark.parametrize("how", ["writable by others", "another owner"])
def test_a_directory_others_control_is_refused(fresh, tmp_path, monkeypatch, how):
    shared = tmp_path / "shared"
    shared.mkdir()
    if how == "writable by others":
        shared.chmod(0o777)
    else:
        if os.getuid() != 0:
            # only root can give a directory away; another user's directory is the same test
            pytest.skip("needs root to chown")
        os.chown(shared, 12345, 12345)
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(shared))
    module, messages = _load_fresh(fresh, SOURCE + "# " + how.replace(" ", "") + "\n")
    assert module.forward(3) == 3
    assert module.__file__.startswith("<")  # compiled in memory
    assert "writable by other users" in messages or "another user" in messages
    assert not list(shared.iterdir())  # nothing written into it


def test_a_key_others_can_read_is_refused(fresh, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "key").write_bytes(os.urandom(32))
    (keys / "key").chmod(0o644)
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(tmp_path / "cache"))
    module, messages = _load_fresh(fresh, SOURCE + "# leakykey\n")
    assert module.__file__.startswith("<")
    assert "readable or writable by others" in messages


def test_cache_directory_is_created_private(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(tmp_path / "new" / "cache"))
    module, messages = _load_fresh(fresh, SOURCE + "# private\n")
    assert not messages
    assert module.__file__.endswith(".py")
    assert (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "cache" / "__pycache__").stat().st_mode & 0o777 == 0o700


def test_actdsl_never_unpickles_cache_files(fresh, tmp_path, monkeypatch):
    """The scrubber reads Numba's files only to MAC them: a planted file is deleted unread."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(cache_dir))
    source = SOURCE + "# scrubbed\n"
    module, _ = _load_fresh(fresh, source)
    stem = f"actdsl_generated_{fresh.source_key(source)}"
    sentinel = tmp_path / "PWNED"
    planted = cache_dir / "__pycache__" / f"{stem}.forward-1.py311.nbi"
    planted.write_bytes(pickle.dumps(Payload(sentinel)))
    calls = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    _load_fresh(fresh, source)
    assert not planted.exists() and not sentinel.exists() and not calls
