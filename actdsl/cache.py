"""Generated modules as real files, so Numba's ``cache=True`` works across processes.

A module's file name is the hash of its source: processes that generate the same source share
the file, and a changed generator (or actdsl version) never meets stale machine code, since
Numba's own cache is keyed on the file. Files are written to a temporary name and renamed into
place (atomic). What runs is always the checked source in memory, never the file read back.

Trust (docs/security.md): only this user, and only what this user's actdsl wrote, is trusted.

* The directory is created private (0700) and used only while it is owned by this user and
  writable by no one else, and so is its ``__pycache__`` (where Numba writes); otherwise, and
  when it cannot be written, kernels compile in memory with one warning.
* Numba unpickles its index (``.nbi``) and machine code (``.nbc``) files when a kernel is first
  called. Each of them gets a MAC (HMAC-SHA256 over its name and bytes, with a per-user key kept
  outside the cache directory: ``ACTDSL_CACHE_KEY`` or ``$XDG_CONFIG_HOME/actdsl/cache-key``),
  written after Numba writes the file; before Numba can read them, every file whose MAC is missing
  or wrong is deleted, and Numba compiles again. actdsl itself never unpickles them.
* Without a usable key (none yet and nowhere to create one), machine code is not cached.

``ACTDSL_CACHE_DIR`` relocates the cache; the default is ``$XDG_CACHE_HOME/actdsl`` or
``~/.cache/actdsl``.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import linecache
import os
import secrets
import stat
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

_lock = threading.RLock()  # re-entrant: importing a kernel module loads vmath through here
_warned: set[str] = set()
#: module name -> (file path, users): modules loaded from the cache directory, whose Numba files
#: are checked before and sealed after each compile; users count the kernels holding one
_on_disk: dict[str, list] = {}
_shared: set[str] = set()  # names of modules loaded with shared=True
_key_cache: dict[str, bytes | None] = {}
NUMBA_SUFFIXES = (".nbi", ".nbc")


def cache_dir() -> Path:
    env = os.environ.get("ACTDSL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "actdsl"


def key_file() -> Path:
    env = os.environ.get("ACTDSL_CACHE_KEY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "actdsl" / "cache-key"


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def _warn_once(message: str):
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _write_atomically(path: Path, data: str | bytes, mode: int = 0o600):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Untrusted(OSError):
    """A cache directory (or key) this user cannot trust: the reason is its text."""


class _NoKey(Untrusted):
    """No MAC key: Numba's files cannot be checked, so none are used."""


def private_dir(path: Path, create: bool = True) -> Path:
    """``path``, created 0700 if missing; Untrusted unless it is a directory owned by this user
    and writable by no one else (a symlink is judged by what it points to)."""
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise Untrusted(f"{path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise Untrusted(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Untrusted(f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")
    return path


def _writable(path: Path) -> bool:
    """Writable, and meant to be: a directory whose owner took away its own write permission is
    read-only here even for root, who could write anyway."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & stat.S_IWUSR)


def _key() -> bytes | None:
    """This user's MAC key (created on first use), or None where there is none to be had."""
    where = str(key_file())
    if where in _key_cache:
        return _key_cache[where]
    path = Path(where)
    key = None
    try:
        try:
            private_dir(path.parent, create=False)
            key = _read_key(path)
        except FileNotFoundError:
            private_dir(path.parent)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
            except FileExistsError:  # another process made it first
                pass
            key = _read_key(path)
    except OSError as e:
        _warn_once(f"actdsl: no usable cache key at {path} ({e.strerror or e}); Numba's machine "
                   "code is not cached, so new processes compile again. Set ACTDSL_CACHE_KEY to "
                   "a file in a private, writable directory to fix this.")
        key = None
    _key_cache[where] = key
    return key


def _read_key(path: Path) -> bytes:
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise Untrusted(f"the key {path} belongs to another user")
    if st.st_mode & 0o077:
        raise Untrusted(f"the key {path} is readable or writable by others "
                        f"(mode {stat.S_IMODE(st.st_mode):o}; chmod 600 it)")
    key = path.read_bytes()
    if len(key) < 32:
        raise Untrusted(f"the key {path} is too short")
    return key


def _mac(key: bytes, path: Path, data: bytes) -> bytes:
    return hmac.new(key, path.name.encode() + b"\0" + data, hashlib.sha256).hexdigest().encode()


def load(source: str, shared: bool = False) -> types.ModuleType:
    """Import ``source`` from the cache directory (writing it if missing or damaged).
    ``shared``: helpers that every kernel's first call may compile (see numba_compiling)."""
    from .backends.emit import check_generated
    source = check_generated(source)  # before anything is written or run
    key = source_key(source)
    name = f"actdsl_generated_{key}"
    with _lock:
        if name in sys.modules:
            if name in _on_disk:
                _on_disk[name][1] += 1
            return sys.modules[name]
        directory = cache_dir()
        path = directory / f"{name}.py"
        try:
            if _key() is None:  # already warned about
                raise _NoKey()
            private_dir(directory)
            if not all(_writable(p) for p in (directory, private_dir(directory / "__pycache__"))):
                # Numba cannot cache in a directory it cannot write ("no locator available")
                raise Untrusted(f"{directory} is read-only")
            try:
                current = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
            if current != source:
                _write_atomically(path, source)
            _scrub_numba_cache(path)
            module = _import_file(name, path, source)
            _on_disk[name] = [path, 1]
        except OSError as e:
            if not isinstance(e, _NoKey):
                _warn_once(f"actdsl: cannot use the cache directory {directory} "
                           f"({e.strerror or e}); compiling in memory, so new processes compile "
                           "again. Set ACTDSL_CACHE_DIR to a private, writable directory to fix "
                           "this.")
            module = _import_memory(name, source)
        sys.modules[name] = module
        if shared:
            _shared.add(name)
        return module


def release(module: types.ModuleType) -> None:
    """One kernel no longer uses ``module``: when none does, actdsl forgets it (sys.modules),
    so that the module, its source and the functions compiled from it can be freed."""
    name = module.__name__
    with _lock:
        entry = _on_disk.get(name)
        if entry is not None:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _on_disk[name]
        if sys.modules.get(name) is module:
            del sys.modules[name]
        # Numba reads the source through inspect, which keeps it in linecache (under the path
        # and relative forms of it)
        base = os.path.basename(getattr(module, "__file__", "") or "")
        if base.startswith(name):
            for cached in [k for k in list(linecache.cache) if str(k).endswith(base)]:
                linecache.cache.pop(cached, None)


def _listing(paths) -> dict[Path, list[str]]:
    """The Numba files in the ``__pycache__`` beside each of ``paths``, each folder listed once
    (a cache of many kernels holds tens of thousands of files: 30 ms a listing)."""
    out: dict[Path, list[str]] = {}
    for path in paths:
        folder = path.parent / "__pycache__"
        if folder not in out:
            try:
                out[folder] = sorted(f for f in os.listdir(folder) if f.endswith(NUMBA_SUFFIXES))
            except OSError:
                out[folder] = []
    return out


def _numba_files(path: Path, listing: dict | None = None) -> list[Path]:
    folder = path.parent / "__pycache__"
    names = (listing or _listing([path]))[folder]
    prefix = path.stem + "."
    return [folder / f for f in names if f.startswith(prefix)]


def _scrub_numba_cache(path: Path, listing: dict | None = None) -> None:
    """Delete every Numba file of this module whose MAC is missing or wrong (planted, damaged,
    swapped or left half-written), before Numba can unpickle it; Numba then compiles again."""
    key = _key()
    for f in _numba_files(path, listing):
        tag = f.with_name(f.name + ".mac")
        try:
            ok = key is not None and hmac.compare_digest(tag.read_bytes(), _mac(key, f, f.read_bytes()))
        except OSError:
            ok = False
        if not ok:
            for victim in (f, tag):
                with contextlib.suppress(OSError):
                    victim.unlink()


def _seal(path: Path, listing: dict | None = None) -> None:
    """MAC every Numba file of this module that has none or a stale one (Numba just wrote it)."""
    key = _key()
    if key is None:
        return
    for f in _numba_files(path, listing):
        tag = f.with_name(f.name + ".mac")
        try:
            mac = _mac(key, f, f.read_bytes())
            if not (tag.exists() and hmac.compare_digest(tag.read_bytes(), mac)):
                _write_atomically(tag, mac)
        except OSError:
            continue


@contextlib.contextmanager
def numba_compiling(*modules: types.ModuleType):
    """Around anything that may make Numba read or write its cache files (a kernel's first call,
    making a ufunc): files are checked before and sealed after. ``modules``: the generated
    modules whose functions may compile now; the shared helpers (``load(..., shared=True)``,
    vmath) are always included; none given: every module on disk. (Checking every module at
    every first call listed the cache folder once per module: quadratic, minutes in a test run.)"""
    with _lock:
        names = ({m.__name__ for m in modules} | _shared) if modules else set(_on_disk)
        paths = [_on_disk[n][0] for n in sorted(names) if n in _on_disk]
        listing = _listing(paths)
        for path in paths:
            _scrub_numba_cache(path, listing)
    try:
        yield
    finally:
        with _lock:
            listing = _listing(paths)
            for path in paths:
                _seal(path, listing)


def _import_file(name: str, path: Path, source: str) -> types.ModuleType:
    """The module compiled from ``source`` (checked, in memory), under the file's name: Numba
    keys its cache on that file, but what runs is never read back from disk, where another
    process or user could have changed it since."""
    return _execute(name, str(path), source)


def _import_memory(name: str, source: str) -> types.ModuleType:
    # Numba cannot cache functions that do not live in a file
    return _execute(name, f"<{name}>", source.replace("cache=True", "cache=False"))


def _execute(name: str, filename: str, source: str) -> types.ModuleType:
    from .backends.emit import run_generated
    module = types.ModuleType(name)
    module.__file__ = filename
    run_generated(source, filename, module.__dict__)
    return module
