"""PyTorch as a second opinion: torch.nn.functional (and autograd for derivatives and VJPs)
for the keys it has, and the places where PyTorch, not actdsl, is the one that is wrong.

Where an entry of TORCH_WRONG (or torch_wrong_rows) applies, torch's value is not compared;
actdsl must still meet the mpmath truth there. The entries were found by this suite: each is a
point where torch and actdsl disagreed and the truth sided with actdsl.
"""
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - CI installs torch (make interop)
    torch = F = None


def _norm(x, center, scale):
    mean = x.mean(-1, keepdim=True)
    y = x - mean if center else x
    if scale == "std":
        return y / ((x - mean).pow(2).mean(-1, keepdim=True).sqrt() + 1e-8)
    if scale == "max":
        return y / (x.abs().amax(-1, keepdim=True) + 1e-8)
    return y


def functions():
    if torch is None:
        return {}
    return {
        "linear": lambda x: x * 1, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
        "softplus": F.softplus, "elu": F.elu, "selu": F.selu, "celu": F.celu, "gelu": F.gelu,
        "gelu:tanh": lambda x: F.gelu(x, approximate="tanh"), "leaky_relu": F.leaky_relu,
        "relu6": F.relu6, "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid,
        "hardswish": F.hardswish, "silu": F.silu, "mish": F.mish, "softsign": F.softsign,
        "logsigmoid": F.logsigmoid, "tanhshrink": F.tanhshrink, "softshrink": F.softshrink,
        "hardshrink": F.hardshrink, "threshold": lambda x: F.threshold(x, 0.0, 0.0),
        "exponential": torch.exp, "rect:min": lambda x: torch.clamp(x, max=1.0),
        "trel": lambda x: torch.clamp(x, 0.0, 1.0),
        "prelu(r=0.25)": lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype)),
        "elu(alpha=0.5)": lambda x: F.elu(x, 0.5), "celu(alpha=2)": lambda x: F.celu(x, 2.0),
        "leaky_relu(negative_slope=0.2)": lambda x: F.leaky_relu(x, 0.2),
        "hardtanh(min_val=-2, max_val=3)": lambda x: F.hardtanh(x, -2.0, 3.0),
        "softshrink(lambd=1)": lambda x: F.softshrink(x, 1.0),
        "threshold(threshold=1, value=-2)": lambda x: F.threshold(x, 1.0, -2.0),
        "softmax": lambda x: F.softmax(x, -1), "log_softmax": lambda x: F.log_softmax(x, -1),
        "softmin": lambda x: F.softmin(x, -1),
        "norm:mean": lambda x: _norm(x, True, None), "norm:max": lambda x: _norm(x, False, "max"),
        "norm:std": lambda x: _norm(x, False, "std"), "norm:z": lambda x: _norm(x, True, "std"),
        "tanh+norm:z": lambda x: _norm(torch.tanh(x), True, "std"),
        "softplus+norm:z": lambda x: _norm(F.softplus(x), True, "std"),
        "relu+log_softmax": lambda x: F.log_softmax(F.relu(x), -1),
        "tanh+norm:z+softmax": lambda x: F.softmax(_norm(torch.tanh(x), True, "std"), -1),
    }


def torch_points(dtype):
    """Moderate inputs, every kink of the keys above with its neighbours, softplus's switch."""
    pts = list(np.linspace(-10, 10, 81)) + [-50, -30, -20, 20, 20.5, 25, 30, 50]
    dtype = np.dtype(dtype)
    for k in (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 6.0):
        f = dtype.type(k)
        pts += [float(np.nextafter(f, dtype.type(np.inf))), k,
                float(np.nextafter(f, dtype.type(-np.inf)))]
    return np.unique(np.array(pts, dtype=dtype))


# (spec, quantity, predicate on x, why torch is wrong there). The derivative at a kink follows
# the branch the definition selects (DESIGN.md); PyTorch's autograd picks differently at these.
TORCH_WRONG = [
    ("hardswish", "derivative", lambda x: x == -3,
     "hardswish is 0 for x <= -3 (PyTorch's own docs), so its derivative at -3 is 0; autograd "
     "uses x/3 + 1/2 there (-0.5)"),
    ("hardswish", "derivative", lambda x: x == 3,
     "hardswish is x for x >= 3 (PyTorch's docs): derivative 1 at 3; autograd gives 1.5"),
    ("rect:min", "derivative", lambda x: x == 1,
     "min(1, z) takes the constant at the tie (as relu'(0) = 0): derivative 0 at 1; "
     "clamp's autograd passes the gradient at its bound"),
    ("trel", "derivative", lambda x: (x == 0) | (x == 1),
     "trel'(0) = trel'(1) = 0 (README); clamp's autograd passes the gradient at its bounds"),
    ("prelu(r=0.25)", "derivative", lambda x: x == 0,
     "prelu = max(0, z) - max(0, -r z): both ties take the constant, derivative 0 at 0; "
     "PyTorch's prelu backward gives the leak r there"),
    ("tanh", "derivative", lambda x: abs(x) > 1,
     "torch's tanh backward is 1 - y^2, which cancels as tanh(x) nears +-1 (5% off at 8 in "
     "float32) and is 0 once it rounds to +-1; the truth sech^2 is 3.5e-26 at -30"),
    ("gelu", "forward", lambda x: x < -1,
     "torch computes x (1 + erf(x/sqrt 2)) / 2: 1 + erf cancels for x < 0 (4% off at -5 in "
     "float32), to 0 below about -5.5 in float32 and -8 in float64 (truth -7.6e-23 at -10)"),
    ("gelu", "derivative", lambda x: x < -1, "the same cancellation in Phi(x) = (1 + erf) / 2"),
    ("gelu:tanh", "forward", lambda x: x < -1,
     "torch computes x (1 + tanh(u)) / 2: 1 + tanh cancels for x < 0 (30% off at -5 in float32), "
     "to 0 further out (truth -1.2e-37 at -10)"),
    ("gelu:tanh", "derivative", lambda x: x < -1, "the same cancellation in 1 + tanh(u)"),
    ("hardsigmoid", "derivative", lambda x: (x > -3) & (x < 3),
     "torch's hardsigmoid backward multiplies by 1/6 rounded to float32, even in float64 "
     "(0.1666666716 instead of 0.1666666667)"),
    ("sigmoid", "derivative", lambda x: x > 1,
     "torch's sigmoid backward is y (1 - y): 1 - y cancels for x > 0 (about 100 ULP at 5)"),
    ("softplus", "forward", lambda x: x > 20,
     "F.softplus returns x itself above threshold=20, dropping log1p(exp(-x)) (2e-9 at 20: "
     "about 1e7 ULP of float64)"),
    ("softplus", "derivative", lambda x: x > 20,
     "F.softplus's gradient is 1 above threshold=20, not sigmoid(x) (1 - 2e-9 at 20)"),
]


def torch_wrong(spec, what, x):
    """Boolean mask of the points where TORCH_WRONG says torch is wrong, and the reasons."""
    mask = np.zeros(np.shape(x), dtype=bool)
    for key, q, pred, _ in TORCH_WRONG:
        if key == spec and q == what:
            mask |= pred(np.asarray(x, dtype=np.float64))
    return mask



def torch_wrong_rows(spec):
    """(row name, quantity) where torch is the wrong one for a row-wise spec: the std of a row
    of one value or of equal values is 0, where torch's sqrt backward gives 0 * inf = NaN;
    norm:z's true derivative there is (dy - mean dy) / eps (norm:std's: dy / eps)."""
    if spec == "norm:max":  # tied max|z|: torch's amax splits the gradient evenly, the
        # definition (DESIGN.md) routes it to the first argmax
        return {(name, "vjp") for name in ("spread100", "spread200", "const3", "const4",
                                           "zeros3", "const3tenth")}
    # torch's mean of a row of equal values is rounded (sum([0.1] * 3) / 3 != 0.1), so
    # x - mean is 1e-17, not 0, and norm:std's std is 1e-17, not 0 (which 1/eps magnifies)
    rounded_mean = {("const3tenth", "forward")} if any(
        k in spec for k in ("norm:mean", "norm:std", "norm:z")) else set()
    if "norm:z" not in spec and "norm:std" not in spec:
        return rounded_mean
    return rounded_mean | {(name, "vjp") for name in ("len1", "len1neg", "len1zero", "const3",
                                                      "const4", "zeros3", "const3tenth")}
