"""actdsl: a compiler for neural-network activation functions.

    >>> import actdsl
    >>> k = actdsl.compile("tanh+norm:z")
    >>> y = k(x); dx = k.vjp(x, dy)
"""
from .compiler import Kernel, compile
from .errors import (ActdslError, ArrayTypeError, ParameterError, SpecSyntaxError,
                     UnknownActivationError)
from .syntax import parse
from .docs import latex

__version__ = "0.1.0"

__all__ = ["ActdslError", "ArrayTypeError", "Kernel", "ParameterError", "SpecSyntaxError",
           "UnknownActivationError", "compile", "latex", "parse", "__version__"]
