"""Numba kernels compiled for the full vector width of the CPU they run on.

LLVM prefers 256-bit vectors on AVX-512 CPUs (the ``prefer-256-bit`` tuning of Skylake-X, Ice
Lake, Rocket Lake...), so a Numba loop there runs on ``ymm`` registers while NumPy's tanh and exp
run 512 bits wide: measured on a Rocket Lake, tanh into ``out=`` took 25.4 ms with 256-bit
loops and 12.1 ms with 512-bit ones (issue 16). Numba has only process-wide switches for the
CPU (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, read once), and changing them would change every
other Numba function in the user's process. Instead actdsl's kernels get a Numba target of their
own: Numba's CPU target with its own code generator, whose LLVM target machine has the host's
name and features plus ``-prefer-256-bit`` where the CPU has AVX-512F (elsewhere the host's
features as they are: AVX2, NEON, whatever LLVM offers). ``jit`` is ``numba.jit`` on that target.

The CPU name and feature string are part of Numba's cache key (``magic_tuple``), so a cache
directory shared between machines keeps one entry per CPU and never loads another machine's code.
Numba's own CPU-target functions (vmath's helpers) are callable from these kernels: their IR is
linked in and compiled again by this target's code generator. ``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES`` are honoured as Numba honours them (a generic build for a shared cache).
"""
from __future__ import annotations

import functools
import hashlib
import threading

_lock = threading.Lock()
_targets: dict[tuple[str, str], str] = {}

#: the LLVM tuning feature that halves the vector width on AVX-512 CPUs
PREFER_256 = "prefer-256-bit"


def widen(features: str) -> str:
    """``features`` with LLVM's 256-bit preference turned off where they include AVX-512F."""
    flags = [f for f in features.split(",") if f]
    if "+avx512f" in flags and not any(f[1:] == PREFER_256 for f in flags):
        flags.append("-" + PREFER_256)
    return ",".join(flags)


@functools.cache
def host() -> tuple[str, str]:
    """The CPU name and LLVM feature string actdsl compiles for on this machine (read once, as
    Numba reads its own)."""
    from numba.core import codegen, config
    name = config.CPU_NAME or codegen.ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else \
        codegen.get_host_cpu_features()
    return name, widen(features)


def target(cpu: str, features: str) -> str:
    """The name of a Numba target compiling for ``cpu`` with ``features`` (registered once)."""
    key = (cpu, features)
    with _lock:
        if key not in _targets:
            name = "actdsl_" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]
            _register(name, cpu, features)
            _targets[key] = name
        return _targets[key]


def jit(*args, cpu: tuple[str, str] | None = None, **options):
    """``numba.jit`` (nopython) compiling for ``cpu`` (``(name, features)``; default: this
    machine's, from :func:`host`)."""
    import numba
    return numba.jit(*args, _target=target(*(cpu or host())), **options)


def _contexts() -> list:
    """Numba's CPU target context and those of the targets registered here."""
    from numba.core.registry import cpu_target
    from numba.core.target_extension import dispatcher_registry, target_registry
    return [cpu_target.target_context] + [
        dispatcher_registry[target_registry[name]].targetdescr.target_context
        for name in list(_targets.values())]


def _register(name: str, cpu_name: str, features: str) -> None:
    import numba
    from numba.core import base, codegen, cpu, errors, externals
    from numba.core.dispatcher import Dispatcher
    from numba.core.registry import CPUTarget, cpu_target
    from numba.core.target_extension import CPU, dispatcher_registry, jit_registry, target_registry
    from numba.core.utils import threadsafe_cached_property

    class Codegen(codegen.JITCPUCodegen):
        def _get_host_cpu_name(self):
            return cpu_name

        def _get_host_cpu_features(self):
            return features

    class Context(cpu.CPUContext):
        def init(self):  # CPUContext.init with this target's code generator
            self.is32bit = False
            self._internal_codegen = Codegen(f"actdsl.{name}")
            externals.c_math_functions.install(self)

        def get_function(self, fn, sig, _firstcall=True):
            try:
                return super().get_function(fn, sig, _firstcall)
            except NotImplementedError:
                # a function compiled by another CPU target (Numba's own, or another of
                # these): Numba's typing context, shared, caches overloads across targets, so its
                # lowering may live in that target's context; linked here at the IR level, it is
                # compiled again for this target's CPU
                sig = sig.as_function()
                key = fn.get_impl_key(sig) if isinstance(fn, numba.types.Callable) else fn
                for other in _contexts():
                    if other is not self and key in other._defns:
                        try:
                            impl = other._defns[key].find(sig.args)
                        except errors.NumbaNotImplementedError:
                            continue
                        return base._wrap_impl(impl, self, sig)
                raise

    class Target(CPUTarget):
        @threadsafe_cached_property
        def _toplevel_target_context(self):
            return Context(self.typing_context, self._target_name)

        @threadsafe_cached_property
        def _toplevel_typing_context(self):
            return _typing_view()  # one typing world: the same types and overloads

    hardware = type(f"ActdslCPU_{name}", (CPU,), {})
    target_registry[name] = hardware
    dispatcher_registry[hardware] = type(f"Dispatcher_{name}", (Dispatcher,),
                                         {"targetdescr": Target(name)})
    jit_registry[hardware] = lambda *a, **kw: numba.jit(*a, **{**kw, "_target": name})


#: operators whose typing, for scalar arguments, is a function of the argument types alone
def _operators() -> frozenset:
    import operator
    return frozenset(getattr(operator, name) for name in (
        "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "not_", "invert",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "lshift", "rshift",
        "iadd", "isub", "imul", "itruediv", "iand", "ior", "ixor")) | {abs, min, max, bool, float,
                                                                         int}


_memo: dict = {}


@functools.cache
def _typing_view():
    """Numba's CPU typing context, the same object state (its registries, overloads and caches
    are shared), whose typing of an operator on scalars is remembered by argument types.
    Numba types each ``a * b`` of a kernel anew, trying every template registered for
    ``operator.mul`` (NumPy's array rules among them, which search the ufunc's loops): about
    0.4 ms a call, half of a large kernel's type inference."""
    from numba.core import types
    from numba.core.registry import cpu_target
    from numba.core.typing.templates import _IntrinsicTemplate
    shared = cpu_target.typing_context
    keys = _operators()
    scalar = (types.Number, types.Boolean)

    def remembered(func) -> bool:
        return func.typing_key in keys or all(issubclass(t, _IntrinsicTemplate)
                                               for t in func.templates)

    class View(type(shared)):
        def resolve_function_type(self, func, args, kws):
            if kws or not isinstance(func, types.Function):
                return super().resolve_function_type(func, args, kws)
            key = (func, tuple(args))
            sig = _memo.get(key)  # (only what passed the test below is there)
            if sig is None:
                sig = super().resolve_function_type(func, args, kws)
                if sig is not None and remembered(func) and all(isinstance(a, scalar)
                                                                for a in args):
                    _memo[key] = sig
            return sig

    view = object.__new__(View)
    view.__dict__ = shared.__dict__
    return view
