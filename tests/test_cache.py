"""Compiled kernels are reused across processes; a damaged or unusable cache never gives a wrong
result or an exception."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SPEC = "softsign+tanh+norm:mean"  # a spec no other test compiles, so its cache starts cold
SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np, actdsl
    x = np.linspace(-3, 3, 40, dtype=np.float32).reshape(4, 10)
    actdsl.compile("relu", backend="numba")(x)  # one-time process set-up, not what we measure
    t1 = time.perf_counter()
    k = actdsl.compile(sys.argv[1], backend="numba")
    y = k(x)
    t2 = time.perf_counter()
    ref = actdsl.compile(sys.argv[1])(x)
    stats = k._runner._forward_kernel.stats  # Numba's: machine code loaded or compiled
    print(json.dumps({"load": t2 - t1, "err": float(np.max(np.abs(y - ref))),
                      "hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values())}))
""")


def kernel_files(cache, spec=SPEC):
    """The generated modules of ``spec`` (the cache also holds vmath's and the warm-up's)."""
    from actdsl.compiler import _safe_key

    tag = f"Key {_safe_key(spec)}"
    return [f for f in cache.glob("actdsl_generated_*.py") if tag in f.read_text(errors="replace")[:200]]


def run(tmp_path, env_dir, spec=SPEC):
    env = {**os.environ, "ACTDSL_CACHE_DIR": str(env_dir), "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, spec], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_second_process_reuses_machine_code(tmp_path):
    cache = tmp_path / "cache"
    first, _ = run(tmp_path, cache)
    second, _ = run(tmp_path, cache)
    assert first["err"] < 1e-6 and second["err"] < 1e-6
    assert len(kernel_files(cache)) == 1
    assert list(cache.glob("**/*.nbi")), "Numba wrote no cache index"
    # the second process loads the first's machine code and compiles nothing (a timing ratio
    # stood here: it failed on a loaded machine once compiles got faster)
    assert first["misses"] >= 1 and second["misses"] == 0 and second["hits"] >= 1, (first, second)


@pytest.mark.parametrize("specs", [[SPEC] * 4, [SPEC, "softsign+softmax", SPEC, "elu+norm:std"]],
                         ids=["same spec", "different specs"])
def test_concurrent_compiles_share_one_cache(tmp_path, specs):
    cache = tmp_path / "cache"
    env = {**os.environ, "ACTDSL_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, spec], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for spec in specs]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        # float32 results of size ~3 against the reference: a few float32 ULP
        assert json.loads(out.strip().splitlines()[-1])["err"] < 1e-5
    assert len(kernel_files(cache)) == 1
    assert not list(cache.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_module_file_is_rewritten(tmp_path, damage):
    cache = tmp_path / "cache"
    run(tmp_path, cache)
    (path,) = kernel_files(cache)
    good = path.read_text()
    if damage == "truncate":
        path.write_text(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    else:
        path.write_text("")
    result, _ = run(tmp_path, cache)
    assert result["err"] < 1e-6
    assert path.read_text() == good


def test_damaged_numba_index_is_survived(tmp_path):
    cache = tmp_path / "cache"
    run(tmp_path, cache)
    for f in cache.glob("**/*.nb*"):
        f.write_bytes(b"\x00garbage" * 10)
    result, _ = run(tmp_path, cache)
    assert result["err"] < 1e-6


def test_unusable_directory_falls_back_to_memory_with_a_warning(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    result, stderr = run(tmp_path, blocker / "cache")
    assert result["err"] < 1e-6
    assert "cannot use the cache directory" in stderr


def test_kernel_source_names_the_vmath_it_was_built_against():
    """Numba's cache does not follow dependencies: a kernel cached against an old vmath module
    would refer to a module that no longer exists. Naming vmath's modules in the kernel's source
    gives every vmath change new kernel files."""
    import actdsl
    from actdsl.backends import vmath

    source = actdsl.compile("tanh", backend="numba").source
    assert vmath.MODULES in source


def test_generated_source_is_the_same_in_every_process(tmp_path):
    """The cache is keyed on the generated source: it must not depend on the process's hash
    seed (set iteration order), or every new process would compile again."""
    script = textwrap.dedent("""
        import hashlib, actdsl
        from actdsl.registry import REGISTRY
        specs = sorted(d.key for d in REGISTRY.definitions()) + ["tanh+norm:z", "maxout:4+softmax",
                                                                     "tanh+softplus+sigmoid+relu+elu+selu"]
        text = "".join(actdsl.compile(s, backend=b).source for s in specs for b in ("numpy", "numba"))
        print(hashlib.sha256(text.encode()).hexdigest())
    """)
    digests = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "ACTDSL_CACHE_DIR": str(tmp_path)}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1


MATH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, actdsl
    from numba.core import event
    from actdsl.backends import vmath
    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func)

        def on_end(self, ev):
            pass

    x = np.linspace(-3, 3, 40).reshape(4, 10)
    with event.install_listener("numba:compile", Listener()):
        k = actdsl.compile(sys.argv[1], backend="numba")
        y, dx = k(x), k.vjp(x, x)
    ref = actdsl.compile(sys.argv[1])
    math = sorted({f.__name__ for f in compiled
                   if f.__module__ in (vmath._F32.__name__, vmath._F64.__name__)})
    print(json.dumps({"math": math, "err": float(max(np.max(np.abs(y - ref(x))),
                                                     np.max(np.abs(dx - ref.vjp(x, x)))))}))
""")


def test_a_new_kernel_loads_the_math_functions_it_calls_from_the_cache(tmp_path):
    """Each new process used to compile every math function a new kernel called (softplus, with
    the exp inside it, 0.3-0.45 s) before the kernel itself; they are now compiled once per
    cache and loaded after, for the next new kernel in any process."""
    env = {**os.environ, "ACTDSL_CACHE_DIR": str(tmp_path / "cache")}

    def new_kernel(spec):
        out = subprocess.run([sys.executable, "-c", MATH_SCRIPT, spec], capture_output=True,
                             text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["err"] < 1e-12
        return result["math"]

    assert "softplus" in new_kernel("softplus+softsign")      # an empty cache: compiled
    # another process, a kernel never seen: its math comes from the cache (softplus's exp too)
    assert new_kernel("softsign+softplus+hardtanh") == []
