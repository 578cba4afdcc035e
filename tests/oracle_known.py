"""Cases of tests/test_oracle.py that the current code fails (issue 15), by pytest id.

Each is marked xfail (strict under ORACLE_STRICT=1, see test_oracle.py): when a fix lands the case
XPASSes, and its id is to be removed here. Grouped by cause; the reason is what the mark says.
Pruned on 2026-12-02: the 185 ids that XPASSed (`pytest tests/test_oracle.py -rX`) are gone.
"""

KNOWN = {}


def _mark(reason, test, ids):
    for i in ids:
        KNOWN[f"{test}[{i}]"] = "issue 15: " + reason


_mark("the VJP forms g'(x) = exp(x) before multiplying by dy, so dy * exp(x) overflows to inf "
      'where the true VJP is finite (x = 89 in float32, 710 in float64, |dy| <= 0.75)',
      'test_elementwise_against_mpmath',
      ['exponential-numpy-float32-vjp', 'exponential-numpy-float64-vjp',
       'exponential-numba-float32-vjp', 'exponential-numba-float64-vjp',
       '{exp(z) - 1}-numpy-float32-vjp', '{exp(z) - 1}-numpy-float64-vjp',
       '{exp(z) - 1}-numba-float32-vjp', '{exp(z) - 1}-numba-float64-vjp'])

_mark("+-inf gives NaN instead of the limit for maxout:3 at its initial slopes [-1, 0, 1]: the "
      'flat piece is 0 * inf = NaN, and a max holding NaN is NaN (a learnable slope is not a '
      'constant the compiler can take the limit of)',
      'test_elementwise_limits_and_nan',
      ['maxout:3-numba-float32', 'maxout:3-numba-float64', 'maxout:3-numpy-float32',
       'maxout:3-numpy-float64'])

_mark('a row of equal values (or of one value) is not centred to exactly 0: the mean of equal '
      'numbers is rounded ((0.1+0.1+0.1)/3 != 0.1) and, on the Numba backend, the per-element '
      'value is computed twice in different ways, so z - mean and the VJP for a constant dy are '
      'not 0 (numba float32 softplus+norm:z: VJP 7.4 at [0.7], truth 0)',
      'test_rowwise_constant_rows_exact',
      ['norm:mean-numba-float64', 'norm:mean-numpy-float32', 'norm:mean-numpy-float64',
       'norm:z(eps=1e-5)-numba-float64', 'norm:z(eps=1e-5)-numpy-float32',
       'norm:z(eps=1e-5)-numpy-float64', 'norm:z-numba-float64', 'norm:z-numpy-float32',
       'norm:z-numpy-float64', 'sigmoid+norm:z-numba-float64', 'sigmoid+norm:z-numpy-float32',
       'sigmoid+norm:z-numpy-float64', 'softplus+norm:z-numba-float64',
       'softplus+norm:z-numpy-float32', 'softplus+norm:z-numpy-float64',
       'softsign+norm:mean-numba-float64', 'softsign+norm:mean-numpy-float64',
       'tanh+norm:z-numba-float64', 'tanh+norm:z-numpy-float32', 'tanh+norm:z-numpy-float64'])

_mark('constant rows: the mean of equal values is rounded (no shift by a row element), so norm:* '
      'are off on [0.1]*3 (norm:mean -1.4e-17, norm:std 1e7 (1 - 1.4e-9), and through 1/eps their'
      ' VJPs by ~1e-9 relative); Numba float32 computes u twice differently',
      'test_rowwise_against_mpmath',
      ['softplus+norm:z-numba-float32-forward-constant',
       'softplus+norm:z-numba-float32-vjp-constant',
       'softplus+norm:z-numpy-float32-forward-constant',
       'softplus+norm:z-numpy-float32-vjp-constant'])

_mark("length-1 rows: elementwise+norm:z's VJP is not 0 (truth 0): the per-element value is "
      "computed twice, differently (seen here through PyTorch's comparison)",
      'test_torch_agrees_rowwise',
      ['tanh+norm:z-float64', 'softplus+norm:z-float32'])

_mark('softsign+norm:mean on a constant float32 row is not exactly 0 on the NumPy backend (issue '
      '15)',
      'test_rowwise_constant_rows_exact',
      ['softsign+norm:mean-numpy-float32'])

_mark("torch is off the truth on constant rows where actdsl is exact since issue 15's fixes: to "
      'be recorded in TORCH_WRONG',
      'test_torch_agrees_rowwise',
      ['norm:mean-float64', 'norm:std-float64', 'norm:z-float64'])
