"""Generated modules as real files, so Numba's ``cache=True`` works across processes.

A module's file name is the hash of its source: processes that generate the same source share
the file, and a changed generator (or actdsl version) never meets stale machine code, since
Numba's own cache is keyed on the file. Files are written to a temporary name and renamed into
place (atomic), and read back before use: a truncated or garbled file is rewritten. When the
directory cannot be used, modules are compiled in memory with a warning (no cross-process reuse).

``ACTDSL_CACHE_DIR`` relocates the cache; the default is ``$XDG_CACHE_HOME/actdsl`` or
``~/.cache/actdsl``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import pickletools
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

_lock = threading.RLock()  # re-entrant: importing a kernel module loads vmath through here
_warned: set[str] = set()


def cache_dir() -> Path:
    env = os.environ.get("ACTDSL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "actdsl"


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def _warn_once(message: str):
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _write_atomically(path: Path, source: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(source: str) -> types.ModuleType:
    """Import ``source`` from the cache directory (writing it if missing or damaged)."""
    from .backends.emit import check_generated
    source = check_generated(source)  # before anything is written or run
    key = source_key(source)
    name = f"actdsl_generated_{key}"
    with _lock:
        if name in sys.modules:
            return sys.modules[name]
        directory = cache_dir()
        path = directory / f"{name}.py"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                current = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
            if current != source:
                _write_atomically(path, source)
            _scrub_numba_cache(path)
            module = _import_file(name, path, source)
        except OSError as e:
            _warn_once(f"actdsl: cannot use the cache directory {directory} ({e.strerror or e}); "
                       "compiling in memory, so new processes compile again. Set ACTDSL_CACHE_DIR "
                       "to a writable directory to fix this.")
            module = _import_memory(name, source)
        sys.modules[name] = module
        return module


def _scrub_numba_cache(path: Path) -> None:
    """Delete Numba cache files of this module that Numba could not load: Numba unpickles its
    index and data without a guard, so a damaged file would raise on the first call."""
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*.nb[ic]"):
        try:
            with open(f, "rb") as fh:
                if f.suffix == ".nbi":
                    pickle.load(fh)                          # the Numba version
                    stamp, overloads = pickle.loads(fh.read())
                    ok = isinstance(overloads, dict)
                else:  # refers to the module itself: check the stream, don't unpickle it
                    for _ in pickletools.genops(fh.read()):
                        pass
                    ok = True
        except FileNotFoundError:
            continue
        except Exception:  # any unpickling failure means the file is damaged
            ok = False
        if not ok:
            f.unlink(missing_ok=True)  # Numba recompiles and writes it again


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
