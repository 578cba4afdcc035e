"""Independent NumPy references for the seed keys, written from the seed table and DESIGN.md
(not from actdsl's code). Row-wise ones reduce over the last axis. Plain formulas: use them on
moderate inputs; extreme inputs are tested against hand-written limits."""
import numpy as np

EPS = 1e-8


def _mean(x):
    return x.mean(axis=-1, keepdims=True)


def _std(x):
    return x.std(axis=-1, keepdims=True)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SEED = {
    "linear": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softmax": _softmax,
    "relu": lambda x: np.maximum(0, x),
    "trel": lambda x: np.maximum(0, np.minimum(1, x)),
    "trec": lambda x: np.where(x > 1, x, 0.0),
    "tlin": lambda x: np.where(np.abs(x) > 1, x, 0.0),
    "rect:min": lambda x: np.minimum(1, x),
    "rect:max": lambda x: np.maximum(0, x),
    "norm:mean": lambda x: x - _mean(x),
    "norm:max": lambda x: x / (np.abs(x).max(axis=-1, keepdims=True) + EPS),
    "norm:std": lambda x: x / (_std(x) + EPS),
    "norm:z": lambda x: (x - _mean(x)) / (_std(x) + EPS),
}

# keys with learnable parameters: reference(x, **params), params per unit on the last axis
PARAMETRIC = {
    "prelu": lambda x, r: np.maximum(0, x) - np.maximum(0, -r * x),
    "lgrelu": lambda x, g, r: np.maximum(0, g * x) - np.maximum(0, -r * x),
    "maxout:3": lambda x, m, b: np.max(x[..., None] * m + b, axis=-1),
}

ROWWISE = {"softmax", "norm:mean", "norm:max", "norm:std", "norm:z"}

# kink points and the derivative the definition selects there (DESIGN.md, "Kinks")
KINKS = {
    "relu": {0.0: 0.0},
    "rect:max": {0.0: 0.0},
    "trel": {0.0: 0.0, 1.0: 0.0},
    "trec": {1.0: 0.0},
    "tlin": {1.0: 0.0, -1.0: 0.0},
    "rect:min": {1.0: 0.0},
}

COMPOSITIONS = {
    "relu+tanh": lambda x: np.tanh(np.maximum(0, x)),
    "softplus+norm:z": lambda x: SEED["norm:z"](np.log1p(np.exp(x))),
    "tanh+norm:z": lambda x: SEED["norm:z"](np.tanh(x)),
    "relu+norm:z": lambda x: SEED["norm:z"](np.maximum(0, x)),
    "tanh+softmax": lambda x: _softmax(np.tanh(x)),
}
