"""The Numba backend's own compile target (``actdsl.backends.wide``): full vector width on
AVX-512 CPUs, read from the generated assembly under another CPU's name (compile only: nothing
runs, so this works on any x86-64 machine), the CPU in the cache key, and other Numba code in
the process left as it was."""
import platform
import re

import numpy as np
import pytest

import actdsl
from actdsl.backends import wide

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="assembly of x86-64 CPUs")

#: Skylake-SP's AVX-512 subsets and the features it shares with AVX2 parts
SKX_FEATURES = ("+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl,+avx2,+avx,+fma,+f16c,+bmi,"
                "+bmi2,+popcnt,+lzcnt,+movbe,+sse4.2")
SKX = ("skylake-avx512", wide.widen(SKX_FEATURES))
SKX_LLVM_DEFAULT = ("skylake-avx512", SKX_FEATURES)  # what Numba itself would use there
SIG = {"flat": "void(float32[::1], float32[::1])",
       "rows": "void(float32[:, ::1], float32[:, ::1], float32[:, ::1])"}


def forward_asm(spec: str, cpu) -> str:
    """Assembly of ``spec``'s float32 forward kernel compiled for ``cpu`` (not run)."""
    k = actdsl.compile(spec, backend="numba")
    mod = k._runner.module
    kind = "rows" if k.rowwise else "flat"
    py = (mod.forward_rows if k.rowwise else mod.forward_flat).py_func
    d = wide.jit(py, cpu=cpu, fastmath={"contract", "reassoc"} if k.rowwise else {"contract"},
                 error_model="numpy")
    d.compile(SIG[kind])
    return "\n".join(d.inspect_asm().values())


def registers(asm: str, kind: str) -> int:
    return len(re.findall(rf"%{kind}\d+", asm))


@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "relu", "softplus+norm:z"])
def test_avx512_kernels_run_512_bits_wide(spec):
    asm = forward_asm(spec, SKX)
    assert registers(asm, "zmm") >= 4, f"{spec}: no 512-bit loop for skylake-avx512"
    # the preference this target turns off is what kept Numba's loops at 256 bits there
    assert registers(forward_asm(spec, SKX_LLVM_DEFAULT), "zmm") == 0


HOST_AVX512 = "+avx512f" in wide.host()[1].split(",")


@pytest.mark.skipif(not HOST_AVX512, reason="this CPU has no AVX-512F: the compile-only test "
                    "above checks the width under skylake-avx512's name")
@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "relu", "softplus+norm:z", "gelu"])
def test_kernels_for_this_avx512_cpu_run_512_bits_wide(spec):
    """On the AVX-512 machine at hand, the kernels compiled for it (its CPU name and features,
    as wide.host() gives them) use zmm registers (znver4: tanh's forward 148, relu's 24)."""
    assert registers(forward_asm(spec, wide.host()), "zmm") >= 4


def test_avx2_kernels_use_ymm():
    asm = forward_asm("tanh", ("haswell", "+avx2,+avx,+fma,+f16c,+bmi,+bmi2,+popcnt,+sse4.2"))
    assert registers(asm, "ymm") >= 4 and registers(asm, "zmm") == 0


def test_widen_only_where_avx512():
    assert wide.widen("+avx2,+fma") == "+avx2,+fma"
    assert wide.widen("+avx2,-avx512f") == "+avx2,-avx512f"
    assert wide.widen("+avx512f,+avx2") == "+avx512f,+avx2,-prefer-256-bit"
    assert wide.widen("+avx512f,+prefer-256-bit") == "+avx512f,+prefer-256-bit"  # a choice kept


def test_cpu_is_in_the_cache_key():
    """Numba keys cached machine code on the code generator's CPU name and features: a cache
    directory shared by two machines holds one entry per CPU and never loads the other's."""
    from numba.core.registry import cpu_target
    from numba.core.target_extension import dispatcher_registry, target_registry

    def codegen(cpu):
        name = wide.target(*cpu)
        return dispatcher_registry[target_registry[name]].targetdescr.target_context.codegen()

    skx, default = codegen(SKX).magic_tuple(), codegen(SKX_LLVM_DEFAULT).magic_tuple()
    assert skx[1:] == SKX and default[1:] == SKX_LLVM_DEFAULT
    host = codegen(wide.host()).magic_tuple()
    assert len({skx, default, host, cpu_target.target_context.codegen().magic_tuple()}) >= 3
    k = actdsl.compile("tanh", backend="numba")
    k(np.ones(4, np.float32))
    cache = k._runner.module.forward_flat._cache
    keys = {cache._index_key("sig", codegen(cpu)) for cpu in (SKX, SKX_LLVM_DEFAULT)}
    assert len(keys) == 2


def test_other_numba_code_is_left_alone():
    """Compiling actdsl kernels changes neither Numba's settings nor its own CPU target."""
    import numba
    from numba.core import config
    from numba.core.registry import cpu_target
    before = (config.CPU_NAME, config.CPU_FEATURES, cpu_target.target_context.codegen().magic_tuple())
    forward_asm("tanh", SKX)
    actdsl.compile("softplus", backend="numba")(np.linspace(-3, 3, 8))

    @numba.njit
    def plain(x):
        return x + 1
    plain(1.0)
    assert (config.CPU_NAME, config.CPU_FEATURES,
            cpu_target.target_context.codegen().magic_tuple()) == before
    assert type(plain).targetdescr is cpu_target


def _mixed(a, b, i, j, p):
    """Operators on mixed scalar types, each a typing rule of its own: promotion, integer and
    true division, powers, comparisons and booleans."""
    s = a + b * i - j / i
    t = (i // j) + (i % j) + (j << 1) - (j >> 1) + (i ^ j) + (i & j) + (i | j)
    u = a ** 2 + b ** i + abs(-b) + max(a, b) - min(i, j)
    v = (a > b) & (i <= j) | (not p) ^ (b != b)
    w = float(i) + int(a) + bool(j) + (-a) + (+b)
    return s, t, u, v, w


def test_remembered_typing_gives_numba_s_own_types_and_values():
    """The Numba backend's target remembers how operators on scalars were typed
    (wide._typing_view); typed the first time, then from memory, the kernel's types and values
    are those of Numba's own CPU target, which types every call anew."""
    import numba
    args = [(np.float32(1.5), np.float64(-2.25), np.int32(3), np.int64(2), True),
            (np.float32(-0.5), np.float32(4.0), np.int64(7), np.int32(-3), False),
            (np.float64(2.0), np.float64(0.5), np.int32(5), np.int32(4), True)]
    plain = numba.njit(_mixed)
    for fresh in range(2):  # the second kernel is typed from what the first left in memory
        ours = wide.jit(_mixed)
        for a in args:
            got, want = ours(*a), plain(*a)
            assert [type(g) for g in got] == [type(w) for w in want]
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
        assert [s.return_type for s in ours.nopython_signatures] == \
            [s.return_type for s in plain.nopython_signatures]


def test_numba_s_typing_context_is_left_alone():
    """The view shares the typing context's state, not its class: Numba's own functions are
    typed as they always are."""
    from numba.core.registry import cpu_target
    from numba.core.typing.context import Context
    actdsl.compile("softplus+tanh", backend="numba")(np.linspace(-3, 3, 8))
    assert type(cpu_target.typing_context) is Context
    assert "resolve_function_type" not in vars(cpu_target.typing_context)
    view = wide._typing_view()
    assert view is not cpu_target.typing_context and vars(view) is vars(cpu_target.typing_context)
