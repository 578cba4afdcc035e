"""LaTeX in the seed's notation, for every key and composition."""
import pytest

import actdsl
from actdsl.registry import REGISTRY
from reference import COMPOSITIONS

EXPECTED = {
    "linear": "z",
    "sigmoid": r"\frac{1}{1 + e^{- z}}",
    "tanh": r"\tanh{\left(z \right)}",
    "softplus": r"\log\left(1 + e^{z}\right)",
    "relu": r"\max\left(0, z\right)",
    "rect:max": r"\max\left(0, z\right)",
    "rect:min": r"\min\left(1, z\right)",
    "trel": r"\max\left(0, \min\left(1, z\right)\right)",
    "norm:mean": r"z - \bar{z}",
    "norm:max": r"\frac{z}{\varepsilon + \max\left|z\right|}",
    "norm:std": r"\frac{z}{\varepsilon + \sqrt{\overline{\left(z - \bar{z}\right)^{2}}}}",
    "norm:z": r"\frac{z - \bar{z}}{\varepsilon + \sqrt{\overline{\left(z - \bar{z}\right)^{2}}}}",
    "prelu": r"\max\left(0, z\right) - \max\left(0, - r z\right)",
    "maxout:2": r"\max\left(b_{0} + m_{0} z, b_{1} + m_{1} z\right)",
}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_seed_notation(key):
    assert actdsl.latex(key) == EXPECTED[key]


def test_derivatives_are_piecewise_not_heaviside():
    assert actdsl.latex("relu", derivative=True) == (
        r"\begin{cases} 0 & \text{for}\: z \leq 0 \\1 & \text{otherwise} \end{cases}")
    assert actdsl.latex("softplus", derivative=True) == r"\sigma\left(z\right)"
    for key in ["relu", "trel", "tlin", "prelu", "maxout"]:
        text = actdsl.latex(key, derivative=True)
        assert "theta" not in text and "delta(" not in text.lower()


def test_rowwise_derivative_is_the_jacobian_entry():
    text = actdsl.latex("norm:mean", derivative=True)
    assert text == r"\delta_{i j} - \frac{1}{n}"
    assert r"\delta_{i j}" in actdsl.latex("softmax", derivative=True)


@pytest.mark.parametrize("key", sorted(REGISTRY.names()) + list(COMPOSITIONS))
def test_every_key_and_composition_renders(key):
    for derivative in (False, True):
        text = actdsl.latex(key, derivative=derivative)
        assert text and "RowSum" not in text and "Piecewise" not in text
