"""actdsl.jax in every JAX transformation, against jax.nn (a second opinion written
independently) and JAX's own numerical gradient check."""
import numpy as np
import pytest

from test_interop import need

PEERS = {"relu": "relu", "softplus": "softplus", "sigmoid": "sigmoid", "silu": "silu",
         "elu": "elu", "softmax": "softmax", "log_softmax": "log_softmax", "gelu": "gelu",
         "tanh": "tanh", "softsign": "soft_sign"}


@pytest.fixture
def jx():
    jax = need("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _peer(jx, spec):
    if spec == "gelu":
        return lambda v: jx.nn.gelu(v, approximate=False)
    if spec == "tanh":
        return jx.numpy.tanh
    return getattr(jx.nn, PEERS[spec])


def _points():
    x = np.random.default_rng(2).normal(size=(3, 7)) * 3
    x[0, 0], x[1, 1] = 0.0, -0.0   # smooth activations: every derivative exists at 0 too
    return x


def _transformations(jx, g, v):
    """Every transformation of ``g``, as one jitted function (one compile, not one per op)."""
    import jax.numpy as jnp

    def loss(t):
        return jnp.sum(jnp.sin(g(t)) * v)

    def run(x):
        return (g(x), jx.vmap(g)(x), jx.jvp(g, (x,), (v,))[1], jx.vjp(g, x)[1](v)[0],
                jx.grad(loss)(x), jx.jacfwd(g)(x[:1]), jx.jacrev(g)(x[:1]),
                jx.hessian(loss)(x), jx.vmap(jx.hessian(lambda r: jnp.sum(jnp.sin(g(r)))))(x))
    return jx.jit(run)


@pytest.mark.parametrize("spec", sorted(PEERS))
def test_every_transformation_equals_jax_nn(jx, spec):
    import jax.numpy as jnp
    import actdsl.jax as aj
    x = jnp.asarray(_points()[:2, :5])
    if spec in ("relu", "elu", "softsign"):
        x = x.at[0, 0].set(0.5).at[1, 1].set(-0.25)  # kinks: conventions differ there
    v = jnp.asarray(np.random.default_rng(3).normal(size=x.shape))
    ours = _transformations(jx, aj.function(spec), v)(x)
    theirs = _transformations(jx, _peer(jx, spec), v)(x)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", ["prelu+norm:z", "maxout:3+softmax"])
def test_compositions_and_parameters_pass_jax_check_grads(jx, spec):
    import jax.numpy as jnp
    from jax.test_util import check_grads
    import actdsl
    import actdsl.jax as aj
    k = actdsl.compile(spec)
    x = jnp.asarray(_points()[:2, :3] + 0.1)
    params = {n: jnp.asarray(v + 0.1) for n, v in k.init_params(3, rng=4).items()}
    f = aj.function(spec)
    names = sorted(params)
    g = lambda x, *ps: f(x, **dict(zip(names, ps)))  # noqa: E731
    order = 2 if spec == "prelu+norm:z" else 1   # (JAX's check is slow: one spec at order 2)
    check_grads(g, (x, *[params[n] for n in names]), order=order, modes=["fwd", "rev"], eps=1e-5)
    # the Hessian-vector product agrees with the kernel's vjp_vjp
    dy, w = (jnp.asarray(np.random.default_rng(s).normal(size=x.shape)) for s in (5, 6))
    hvp = jx.jit(lambda t, u: jx.jvp(jx.grad(lambda s: jnp.sum(dy * f(s, **params))), (t,),
                                     (u,))[1])(x, w)
    ours = k.vjp_vjp(np.asarray(x), np.asarray(dy), np.asarray(w),
                     **{n: np.asarray(v) for n, v in params.items()})[0]
    np.testing.assert_allclose(hvp, ours, rtol=1e-9, atol=1e-12)


def test_scalars_axis_and_shared_parameters(jx):
    import jax.numpy as jnp
    import actdsl
    import actdsl.jax as aj
    assert float(jx.grad(aj.function("softplus"))(0.0)) == 0.5
    assert float(jx.grad(jx.grad(aj.function("softplus")))(0.0)) == 0.25
    with pytest.raises(actdsl.ActdslError, match="row-wise"):
        aj.function("softmax")(1.0)
    x = jnp.asarray(_points()[:, :4])
    f = aj.function("softmax", axis=0)
    np.testing.assert_allclose(jx.jit(jx.jacfwd(f))(x), jx.jit(jx.jacrev(f))(x), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(f(x), jx.nn.softmax(x, axis=0), rtol=1e-12)
    p = aj.function("prelu")
    # one shared slope: its gradient is the sum over every unit
    d = jx.grad(lambda r: jnp.sum(p(x, r=r)))(0.2)
    np.testing.assert_allclose(d, np.sum(np.minimum(np.asarray(x), 0)), rtol=1e-12)
