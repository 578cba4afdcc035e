"""actdsl: a compiler for neural-network activation functions.

    >>> import actdsl
    >>> k = actdsl.compile("tanh+norm:z")
    >>> y = k(x); dx = k.vjp(x, dy)
"""
from . import sym
from .compiler import Kernel, compile
from .custom import Activation, check_derivative, register, unregister
from .errors import (ActdslError, ArrayTypeError, BackendUnavailableError, BudgetError,
                     ParameterError, SpecSyntaxError, UnknownActivationError)
from . import budget
from .syntax import parse
from .docs import latex
from .check import check
from .table import table
from .plot import plot

__version__ = "0.1.0"

__all__ = ["ActdslError", "Activation", "ArrayTypeError", "BackendUnavailableError",
           "BudgetError", "Kernel", "ParameterError", "budget",
           "SpecSyntaxError", "UnknownActivationError", "check", "check_derivative", "compile",
           "latex", "parse", "plot", "register", "sym", "table", "unregister", "__version__"]
