"""Custom activations three ways (Activation subclasses, register(), inline formulas): each gets
exact derivatives, every CPU backend, LaTeX, and use inside compositions; nothing runs user text."""
import os
import time

import numpy as np
import pytest
import sympy as sp

import actdsl
from actdsl.registry import REGISTRY
from conftest import numeric_vjp

BACKENDS = ["numpy", "numba"]


@pytest.fixture
def cleanup():
    before = set(REGISTRY.names())
    yield
    for name in set(REGISTRY.names()) - before:
        if name in REGISTRY and not REGISTRY.lookup(name).builtin:
            actdsl.unregister(name)


def test_theanets_thresholded_linear_verbatim(cleanup):
    class ThresholdedLinear(actdsl.Activation):
        def __call__(self, z):
            return z * (z > 1)

    x = np.array([-2.0, 0.5, 1.0, 1.5, 3.0])
    for backend in BACKENDS:
        k = actdsl.compile("thresholdedlinear", backend=backend)
        np.testing.assert_array_equal(k(x), [0, 0, 0, 1.5, 3.0])
        np.testing.assert_array_equal(k.derivative(x), [0, 0, 0, 1, 1])
        np.testing.assert_allclose(actdsl.compile("tanh+thresholdedlinear", backend=backend)(x),
                                   np.where(np.tanh(x) > 1, np.tanh(x), 0))
    assert actdsl.latex("thresholdedlinear")


SWISH, MISH, GELU = "silu", "mish", "gelu"


def _three_ways():
    z = sp.Symbol("z")

    class Swish2(actdsl.Activation):
        def __call__(self, z):
            return z * actdsl.sym.sigmoid(z)

    class Mish2(actdsl.Activation):
        def __call__(self, z):
            return z * actdsl.sym.tanh(actdsl.sym.log(1 + actdsl.sym.exp(z)))

    class Gelu2(actdsl.Activation):
        def __call__(self, z):
            return z * (1 + actdsl.sym.erf(z / np.sqrt(2))) / 2

    actdsl.register("swish3", z / (1 + sp.exp(-z)), "swish from SymPy")
    actdsl.register("mish3", z * sp.tanh(sp.log(1 + sp.exp(z))), "mish from SymPy")
    actdsl.register("gelu3", z * (1 + sp.erf(z / sp.sqrt(2))) / 2, "gelu from SymPy")
    return {
        SWISH: ["swish2", "swish3", "{z * sigmoid(z)}", "{z / (1 + exp(-z))}"],
        MISH: ["mish2", "mish3", "{z * tanh(softplus(z))}", "{z * tanh(log(1 + exp(z)))}"],
        GELU: ["gelu2", "gelu3", "{z * (1 + erf(z / sqrt(2))) / 2}"],
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_swish_mish_gelu_three_ways_match_the_builtins(backend, cleanup):
    ways = _three_ways()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 9)) * 3
    g = rng.normal(size=x.shape)
    for builtin, specs in ways.items():
        ref = actdsl.compile(builtin, backend=backend)
        for spec in specs:
            k = actdsl.compile(spec, backend=backend)
            np.testing.assert_allclose(k(x), ref(x), rtol=1e-12, atol=1e-14, err_msg=spec)
            np.testing.assert_allclose(k.vjp(x, g), ref.vjp(x, g), rtol=1e-10, atol=1e-13, err_msg=spec)
            # and inside a composition
            np.testing.assert_allclose(actdsl.compile(f"tanh+{spec}+norm:z", backend=backend)(x),
                                       actdsl.compile(f"tanh+{builtin}+norm:z", backend=backend)(x),
                                       rtol=1e-10, atol=1e-12, err_msg=spec)


def test_textbook_formulas_are_made_stable():
    x = np.array([-1e4, -710.0, 0.0, 710.0, 1e4])
    e710 = 4.4762862256751298e-309  # e^-710 (mpmath), a subnormal: the true value, not 0
    with np.errstate(all="raise"):  # the kernels raise nothing; the assertions run outside
        softplus = actdsl.compile("{log(1 + exp(z))}")(x)
        sigmoid = actdsl.compile("{1 / (1 + exp(-z))}")(x)
    np.testing.assert_allclose(softplus, [0, e710, np.log(2), 710, 1e4], rtol=1e-14, atol=0)
    np.testing.assert_allclose(sigmoid, [0, e710, 0.5, 1, 1], rtol=1e-14, atol=0)
    assert "softplus" in str(actdsl.compile("{log(1 + exp(z))}").expr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_rowwise_activation_has_a_correct_vjp(backend, cleanup):
    class Centered(actdsl.Activation):
        """z minus its row mean, scaled by the row's mean square."""

        def __call__(self, z):
            c = z - z.mean()
            return c / ((c * c).mean() + 1)

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6))
    g = rng.normal(size=x.shape)
    k = actdsl.compile("centered", backend=backend)
    c = x - x.mean(-1, keepdims=True)
    np.testing.assert_allclose(k(x), c / ((c * c).mean(-1, keepdims=True) + 1), rtol=1e-12)
    np.testing.assert_allclose(k.vjp(x, g), numeric_vjp(k, x, g), rtol=1e-6, atol=1e-8)
    f = actdsl.compile("{(z - mean(z)) / (mean((z - mean(z))**2) + 1)}", backend=backend)
    np.testing.assert_allclose(f.vjp(x, g), k.vjp(x, g), rtol=1e-12, atol=1e-14)


def test_subclass_hyper_parameters_learnable_parameters_and_aliases(cleanup):
    class ScaledLeak(actdsl.Activation):
        aliases = ("sleak",)
        params = {"r": 0.25}

        def __init__(self, scale=2.0):
            self.scale = scale

        def __call__(self, z):
            return self.scale * actdsl.sym.where(z > 0, z, self.r * z)

    x = np.array([[-2.0, 3.0], [1.0, -1.0]])
    k = actdsl.compile("sleak(scale=3)")
    assert [p.name for p in k.params] == ["r"]
    p = k.init_params(2)
    np.testing.assert_allclose(p["r"], [0.25, 0.25])
    np.testing.assert_allclose(k(x, **p), 3 * np.where(x > 0, x, 0.25 * x))
    dx, dp = k.vjp(x, np.ones_like(x), with_params=True, **p)
    np.testing.assert_allclose(dp["r"], 3 * np.where(x > 0, 0, x).sum(0))
    with pytest.raises(actdsl.ParameterError, match="scale"):
        actdsl.compile("scaledleak(scal=3)")


def test_register_rules(cleanup):
    z, a, r = sp.symbols("z alpha r")
    actdsl.register("myelu", sp.Piecewise((a * (sp.exp(z) - 1), z <= 0), (z, True)),
                    "elu again", defaults={"alpha": 1.0})
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(actdsl.compile("myelu(alpha=0.5)")(x), actdsl.compile("elu(alpha=0.5)")(x))
    np.testing.assert_allclose(actdsl.compile("myelu")(x), actdsl.compile("elu")(x))
    with pytest.raises(actdsl.ActdslError, match="already registered"):
        actdsl.register("myelu", z, "again")
    actdsl.register("myelu", 2 * z, "replaced", replace=True)
    # the same text compiled again is the new definition (compile's cache of texts as typed
    # follows the registry)
    np.testing.assert_allclose(actdsl.compile("myelu")(x), 2 * x)
    with pytest.raises(actdsl.ActdslError, match="not a valid activation key"):
        actdsl.register("my elu", z)
    with pytest.raises(actdsl.ActdslError, match="not a valid activation key"):
        actdsl.register("1up", z)
    with pytest.raises(actdsl.ParameterError, match="neither"):
        actdsl.register("leaky2", sp.Max(z, r * z))
    actdsl.register("leaky2", sp.Max(z, r * z), learnable={"r": 0.1})
    assert actdsl.compile("leaky2").init_params(3)["r"].tolist() == [0.1] * 3
    with pytest.raises(actdsl.ActdslError, match="built in"):
        actdsl.unregister("relu")


def test_supplied_derivatives_are_checked(cleanup):
    class GoodSoftsign(actdsl.Activation):
        def __call__(self, z):
            return z / (1 + abs(z))

        def derivative(self, z):
            return 1 / (1 + abs(z)) ** 2

    class BadSoftsign(actdsl.Activation):
        def __call__(self, z):
            return z / (1 + abs(z))

        def derivative(self, z):
            return 1 / (1 + abs(z))  # wrong: not squared

    assert actdsl.check_derivative("goodsoftsign").equal
    report = actdsl.check_derivative("badsoftsign")
    assert not report.equal and report.first_difference is not None
    t = report.first_difference
    assert abs(report.expected - 1 / (1 + abs(t)) ** 2) < 1e-12
    assert abs(report.supplied - 1 / (1 + abs(t))) < 1e-12
    assert "differs" in str(report) and repr(t) in str(report)


# -- safety: nothing a user types is ever executed --------------------------------------------
def _corpus(sentinel):
    s = str(sentinel)
    return [
        f"{{__import__('os').system('touch {s}')}}",
        f"__import__('os').system('touch {s}')",
        "{__import__(z)}",
        "{z.__class__}",
        "{z.real}",
        "{lambda: 1}",
        "{(lambda z: z)(1)}",
        f"relu'); open('{s}', 'w'); ('",
        f"{{open('{s}', 'w')}}",
        "{exec}",
        "{eval(z)}",
        "{globals()}",
        "{z if z else z}",
        "{[z for z in z]}",
        "{z; z}",
        "{`z`}",
        "{\"z\"}",
        "relu" + "+relu" * 5000,
        "{" + "(" * 10000 + "z" + ")" * 10000 + "}",
        "{" + "-" * 10000 + "z}",
        "relu(" + "a=1," * 3000 + ")",
        "\x00relu",
        "relu\u202e",
    ]


def test_code_in_specs_is_never_run(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    for spec in _corpus(sentinel):
        t = time.perf_counter()
        with pytest.raises(actdsl.ActdslError) as info:
            actdsl.compile(spec)
        assert time.perf_counter() - t < 2.0, spec[:60]
        assert isinstance(info.value, (actdsl.SpecSyntaxError, actdsl.UnknownActivationError,
                                       actdsl.ParameterError)), (spec[:60], info.value)
        assert not sentinel.exists(), spec[:60]
    assert not os.path.exists(sentinel)


def test_dunder_and_attribute_access_are_syntax_errors():
    for spec in ["{__import__(z)}", "{z.__class__}", "{__builtins__}", "{z.real}"]:
        with pytest.raises(actdsl.SpecSyntaxError):
            actdsl.parse(spec)


def test_unknown_formula_function_suggests_names():
    with pytest.raises(actdsl.UnknownActivationError, match="did you mean 'tanh'"):
        actdsl.compile("{tahn(z)}")
    with pytest.raises(actdsl.ParameterError, match="learnable"):
        actdsl.compile("{prelu(z)}")
    np.testing.assert_allclose(actdsl.compile("{prelu(z, r=0.5)}")(np.array([-2.0, 2.0])), [-1.0, 2.0])


def test_unsupported_functions_and_stray_symbols_are_clear_errors(cleanup):
    z = sp.Symbol("z")
    actdsl.register("gammaact", sp.gamma(z), "not printable by the backends")
    for backend in BACKENDS:
        with pytest.raises(actdsl.ActdslError, match="no implementation of gamma"):
            actdsl.compile("gammaact", backend=backend)

    class Stray(actdsl.Activation):
        def __call__(self, z):
            return z * actdsl.sym.Sym(sp.Symbol("os.system('x')"))

    with pytest.raises(actdsl.ActdslError, match="neither z nor a declared parameter"):
        actdsl.compile("stray")


# -- nothing a user wrote reaches generated code ---------------------------------------------------
def test_generated_code_holds_only_the_compilers_words(tmp_path):
    """Names a user chose (activation, parameter, formula text) never appear in any backend's
    generated source; the check that guards exec rejects a source that holds foreign words."""
    from actdsl.backends import numba_cuda
    from actdsl.backends.emit import check_generated

    class Qqsentinelact(actdsl.Activation):
        """A user's name and parameter names."""

        params = {"wwsentinelparam": 0.3}

        def __init__(self, xxsentinelhyper=2.0):
            self.xxsentinelhyper = xxsentinelhyper

        def __call__(self, z):
            return actdsl.sym.where(z > 0, z * self.xxsentinelhyper, z * self.wwsentinelparam)

    actdsl.register("yysentinelreg", sp.Symbol("z", real=True) ** 2 / 7, description="vvsentinel")
    try:
        for spec in ("qqsentinelact(xxsentinelhyper=3)+norm:z", "yysentinelreg+softmax",
                     "{qqsentinelact(z, wwsentinelparam=0.1) * 1.25e-3 + yysentinelreg(z)}"):
            for backend in ("numpy", "numba"):
                k = actdsl.compile(spec, backend=backend)
                sources = [k.source]
                if backend == "numpy":
                    sources += [numba_cuda.generate(k.plan, "key", d) for d in ("float32", "float64")]
                for src in sources:
                    assert "sentinel" not in src.lower(), (spec, backend)
                    assert check_generated(src) == src
    finally:
        actdsl.unregister("qqsentinelact")
        actdsl.unregister("yysentinelreg")
    with pytest.raises(actdsl.ActdslError, match="not the compiler's"):
        check_generated("def forward(z):\n    return qqsentinel(z)\n")
    with pytest.raises(actdsl.ActdslError, match="not the compiler's"):
        check_generated("x = 'rm -rf'\n")
    # every word of these is in the vocabulary ("import", "numpy"): dunders are refused as such
    with pytest.raises(actdsl.ActdslError, match="nothing was run"):
        check_generated("x = __import__('numpy')\n")
    with pytest.raises(actdsl.ActdslError, match="nothing was run"):
        check_generated("x = z.__class__\n")


def test_the_cache_runs_what_it_generated_not_what_is_on_disk(tmp_path, monkeypatch):
    """Between writing a module and importing it, the file is replaced (another process, another
    user of a shared cache): what runs is the checked source in memory."""
    from actdsl import cache
    sentinel = tmp_path / "SENTINEL"
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(tmp_path / "cache"))

    def tamper(path):
        path.write_text(f"open({str(sentinel)!r}, 'w')\nforward = None\n")

    monkeypatch.setattr(cache, "_scrub_numba_cache", tamper)
    module = cache.load("def forward(z):\n    return z\n")
    assert module.forward(3) == 3 and not sentinel.exists()


def test_the_package_calls_no_text_evaluator_but_strict_sympify():
    """A static check to go with the trap below: in actdsl's own source, every ``sympify`` is
    ``strict=True`` (numbers and SymPy objects only; text refused unparsed), and nothing calls
    ``parse_expr``, ``eval``, ``S(...)`` or ``Tuple.__new__`` (which sympify what they are given);
    the one ``exec`` runs checked generated code (backends/emit.py)."""
    import ast
    from pathlib import Path
    root = Path(actdsl.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            where = f"{path.relative_to(root)}:{node.lineno}"
            strict = any(k.arg == "strict" and getattr(k.value, "value", None) is True
                         for k in node.keywords)
            if name == "sympify" and not strict:
                found.append(f"{where} sympify without strict=True")
            elif name in ("parse_expr", "eval", "S"):
                found.append(f"{where} {name}")
            elif name == "__new__" and isinstance(f, ast.Attribute) and \
                    getattr(f.value, "attr", getattr(f.value, "id", "")) == "Tuple":
                found.append(f"{where} Tuple.__new__")
            elif name == "exec" and path.name != "emit.py":
                found.append(f"{where} exec")
    assert not found, found


def test_no_text_reaches_sympys_parser(monkeypatch):
    """SymPy evaluates text only through sympy_parser (sympify of a str, which Function
    constructors do to their arguments). Trap it, then compile hostile specs, formulas with every
    function, custom activations and parameters on every CPU backend, print their LaTeX and
    check one: the trap stays untouched. Text given where numbers or expressions belong is
    refused before SymPy sees it."""
    import sympy.parsing.sympy_parser as sympy_parser
    from actdsl import stable

    # every piece of text below carries one of these; SymPy parses a few names of its own
    # (units, while it simplifies), which pass through
    marks = ("texttrap", "import", "(z", "z)", "alpha", "givestext")
    seen = []
    real_parse = sympy_parser.parse_expr

    def trap(text, *args, **kwargs):
        if any(m in str(text) for m in marks):
            seen.append(text)
            raise AssertionError(f"SymPy was asked to parse {text!r}")
        return real_parse(text, *args, **kwargs)

    monkeypatch.setattr(sympy_parser, "parse_expr", trap)
    with pytest.raises(AssertionError):
        sp.sympify("__import__('os')")  # the trap is live
    seen.clear()

    z, a, r = sp.symbols("z a r")
    actdsl.register("texttrap", z * a + r * z, defaults={"a": 0.5}, learnable={"r": 0.1}, replace=True)

    class TextTrap2(actdsl.Activation):
        def __init__(self, alpha=0.3):
            self.alpha = alpha

        def __call__(self, z):
            return z * self.alpha + actdsl.sym.tanh(z)

    specs = ["{exp(z) + log(1 + z*z) + tanh(z) + sqrt(abs(z)) + erf(z) + sigmoid(z) + softplus(z)"
             " + expm1(z) + log1p(z*z) + sin(z) + cos(z) + where(z > 0, z, -z) + max(z, 1)"
             " + min(z) + clip(z, -1, 1) - mean(z) + sum(z) + std(z) + var(z)}",
             "texttrap(a=2)+texttrap2(alpha=0.5)+softmax", "prelu(r=0.25)+norm:z", "__import__"]
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    for spec in specs:
        for backend in ("numpy", "numba"):
            try:
                k = actdsl.compile(spec, backend=backend)
            except actdsl.ActdslError:
                assert spec == "__import__"
                continue
            p = k.init_params(4)
            k(x, **p)
            k.vjp(x, np.ones_like(x), **p)
        if spec != "__import__":
            actdsl.latex(spec)
    assert actdsl.check("texttrap", backend="numba").passed
    with pytest.raises(actdsl.ActdslError):
        actdsl.register("texttrap3", z * a, defaults={"a": "__import__('os')"})
    with pytest.raises(TypeError):
        stable.sigmoid("__import__('os')")
    # text in other clothes: SymPy's plain sympify parses a NumPy string array
    for text in (b"__import__('os')", np.array("__import__('os')"), np.str_("__import__('os')")):
        with pytest.raises(TypeError, match="takes SymPy expressions or numbers"):
            stable.softplus(text)
        with pytest.raises(TypeError):
            stable.shifted(z, text)

    class GivesText(actdsl.Activation):
        def __call__(self, z):
            return "__import__('os')"

    with pytest.raises(actdsl.ActdslError):
        actdsl.compile("givestext")
    assert seen == []
    actdsl.unregister("texttrap")
    actdsl.unregister("texttrap2")
    actdsl.unregister("givestext")
