"""Name -> definition. Built-ins are added by ``library.py``; users add through
``actdsl.register`` and ``actdsl.Activation`` subclasses. Lookup is case-insensitive."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from .errors import ActdslError, UnknownActivationError

#: What the grammar accepts as a key: a NAME with an optional word variant.
KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*(-[a-z0-9_]+)*(:[a-z_][a-z0-9_]*(-[a-z0-9_]+)*)?$")


@dataclass(frozen=True)
class Hyper:
    """A fixed hyper-parameter given in the spec (``elu(alpha=0.5)``), with its default."""

    name: str
    default: float | int
    integer: bool = False
    minimum: float | None = None      # inclusive
    maximum: float | None = None      # inclusive
    positive: bool = False            # strictly above zero
    description: str = ""


@dataclass(frozen=True)
class ParamDecl:
    """A learnable parameter, ``shape(hyper)`` values per unit, initialised by ``init``."""

    name: str
    init: Callable[[int, tuple[int, ...], np.random.Generator | None], np.ndarray]
    shape: Callable[[dict], tuple[int, ...]] = lambda hyper: ()
    description: str = ""


Builder = Callable[[sp.Expr, dict, dict], sp.Expr]


@dataclass(frozen=True)
class Definition:
    """One activation: ``build(u, hyper, params)`` returns g applied to the SymPy expression ``u``.

    ``hyper`` maps hyper-parameter names to exact SymPy numbers; ``params`` maps each learnable
    parameter name to a SymPy symbol, or to a tuple of symbols for a per-unit vector. ``display``
    builds the same function in documentation notation (Max, Min, Abs kept); it defaults to
    ``build``.
    """

    key: str
    description: str
    build: Builder
    display: Builder | None = None
    aliases: tuple[str, ...] = ()
    hyper: tuple[Hyper, ...] = ()
    params: tuple[ParamDecl, ...] = ()
    count_hyper: str | None = None   # hyper-parameter set by a count variant: maxout:3
    note: str = ""
    builtin: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    def hyper_named(self, name: str) -> Hyper | None:
        return next((h for h in self.hyper if h.name == name), None)

    def param_named(self, name: str) -> ParamDecl | None:
        return next((p for p in self.params if p.name == name), None)


class Registry:
    def __init__(self):
        self._defs: dict[str, Definition] = {}
        self._aliases: dict[str, str] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every change, so caches keyed on it stay honest

    def add(self, definition: Definition, replace: bool = False) -> Definition:
        names = (definition.key, *definition.aliases)
        for name in names:
            if not isinstance(name, str) or not KEY_RE.fullmatch(name):
                raise ActdslError(f"{str(name)[:40]!r} is not a valid activation key: use lower-case letters, "
                                  "digits, '_' and inner '-', with an optional ':variant'")
        with self._lock:
            if not replace:
                for name in names:
                    if name in self._defs or name in self._aliases:
                        raise ActdslError(f"{name!r} is already registered; pass replace=True to "
                                          "replace it")
            old = self._defs.pop(definition.key, None)
            if old is not None:
                for a in old.aliases:
                    self._aliases.pop(a, None)
            for a in definition.aliases:
                self._defs.pop(a, None)
                self._aliases[a] = definition.key
            self._aliases.pop(definition.key, None)
            self._defs[definition.key] = definition
            self.generation += 1
        return definition

    def remove(self, key: str) -> None:
        with self._lock:
            d = self._defs.pop(self._aliases.get(key, key))
            for a in d.aliases:
                self._aliases.pop(a, None)
            self.generation += 1

    def lookup(self, key: str, context: str = "") -> Definition:
        key = key.lower()
        found = self._defs.get(self._aliases.get(key, key))
        if found is None:
            raise UnknownActivationError(key, self.names(), context=context)
        return found

    def __contains__(self, key: str) -> bool:
        key = key.lower()
        return key in self._defs or key in self._aliases

    def names(self) -> list[str]:
        return [*self._defs, *self._aliases]

    def definitions(self) -> list[Definition]:
        return list(self._defs.values())


REGISTRY = Registry()
