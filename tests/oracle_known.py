"""Cases of tests/test_oracle.py that the current code fails (issue 15), by pytest id.

Each is marked xfail (strict under ORACLE_STRICT=1, see test_oracle.py): when a fix lands the case XPASSes, and
its id is to be removed here. Grouped by cause; the reason is what the mark says.
"""

KNOWN = {}


def _mark(reason, test, ids):
    for i in ids:
        KNOWN[f"{test}[{i}]"] = "issue 15: " + reason


_mark("the VJP forms g'(x) = exp(x) before multiplying by dy, so dy * exp(x) overflows to inf "
      "where the true VJP is finite (x = 89 in float32, 710 in float64, |dy| <= 0.75)",
      "test_elementwise_against_mpmath",
      [f"{s}-{b}-{d}-vjp" for s in ("exponential", "{exp(z) - 1}") for b in ("numpy", "numba")
       for d in ("float32", "float64")])
_mark("lgrelu(g=2, r=0.3)(-max) is -inf where the truth r*z is finite (an intermediate "
      "overflows on the negative side)", "test_elementwise_against_mpmath",
      [f"lgrelu(g=2, r=0.3)-{b}-{d}-forward" for b in ("numpy", "numba")
       for d in ("float32", "float64")])

INF_NAN = ['elu+silu-numba-float32', 'elu+silu-numba-float64', 'elu+silu-numpy-float32',
           'elu+silu-numpy-float64', 'hard_silu-numba-float32', 'hard_silu-numba-float64',
           'hard_silu-numpy-float32', 'hard_silu-numpy-float64', 'hardswish-numba-float32',
           'hardswish-numba-float64', 'hardswish-numpy-float32', 'hardswish-numpy-float64',
           'maxout:3-numba-float32', 'maxout:3-numba-float64', 'maxout:3-numpy-float32',
           'maxout:3-numpy-float64', 'mish+hardswish-numba-float32', 'mish+hardswish-numba-float64',
           'mish+hardswish-numpy-float32', 'mish+hardswish-numpy-float64', 'mish-numba-float32',
           'mish-numba-float64', 'mish-numpy-float32', 'mish-numpy-float64',
           'relu+{z * sigmoid(z)}-numba-float32', 'relu+{z * sigmoid(z)}-numba-float64',
           'relu+{z * sigmoid(z)}-numpy-float32', 'relu+{z * sigmoid(z)}-numpy-float64',
           'silu-numba-float32', 'silu-numba-float64', 'silu-numpy-float32', 'silu-numpy-float64',
           'softsign+logsigmoid-numba-float32', 'softsign+logsigmoid-numba-float64',
           'softsign+logsigmoid-numpy-float32', 'softsign+logsigmoid-numpy-float64',
           'softsign-numba-float32', 'softsign-numba-float64', 'softsign-numpy-float32',
           'softsign-numpy-float64', 'swish-numba-float32', 'swish-numba-float64', 'swish-numpy-float32',
           'swish-numpy-float64', '{z * sigmoid(z)}-numba-float32', '{z * sigmoid(z)}-numba-float64',
           '{z * sigmoid(z)}-numpy-float32', '{z * sigmoid(z)}-numpy-float64',
           '{z * tanh(softplus(z))}-numba-float32', '{z * tanh(softplus(z))}-numba-float64',
           '{z * tanh(softplus(z))}-numpy-float32', '{z * tanh(softplus(z))}-numpy-float64']
_mark('+-inf gives NaN instead of the limit: silu/swish, mish, hardswish at -inf (limit 0), '
      "their derivatives at +-inf (limits 0 and 1), softsign at +-inf (limit +-1), maxout:3's "
      'flat piece (0 * inf), and every composition through them',
      "test_elementwise_limits_and_nan", INF_NAN)

FP_WARN = ['elu+norm:std-numpy-float32', 'gelu+tanhshrink-numpy-float32', 'gelu:tanh-numpy-float32',
           'hardtanh+gelu:tanh-numpy-float32', 'linear+softmin-numpy-float32',
           'log_softmax-numpy-float32', 'mish+softmin-numpy-float32', 'norm:max(eps=0.5)-numpy-float32',
           'norm:max+tanh-numpy-float32', 'norm:max-numpy-float32', 'norm:mean+softmax-numpy-float32',
           'norm:mean-numpy-float32', 'norm:std+sigmoid-numpy-float32', 'norm:std-numpy-float32',
           'norm:z(eps=1e-5)-numpy-float32', 'norm:z+softmax-numpy-float32', 'norm:z-numpy-float32',
           'relu+softmax-numpy-float32', 'relu+tanh-numpy-float32', 'sigmoid+norm:z-numpy-float32',
           'softmax+norm:max-numpy-float32', 'softmax-numpy-float32', 'softmin-numpy-float32',
           'softplus+norm:z-numpy-float32', 'softsign+norm:mean-numpy-float32',
           'tanh+norm:z+softmax-numpy-float32', 'tanh+norm:z-numpy-float32']
_mark("NumPy floating-point warnings on finite input (np.errstate(all='raise')), NumPy backend, "
      'float32: underflow or overflow in a cast (rows spread over ~85 or more for '
      'softmax/softmin/log_softmax, rows of subnormals or near the largest floats for norm:*, '
      'gelu:tanh below about -12)',
      "test_no_floating_point_warnings", FP_WARN)

CONST_EXACT = ['norm:mean-numba-float64', 'norm:mean-numpy-float32', 'norm:mean-numpy-float64',
               'norm:z(eps=1e-5)-numba-float64', 'norm:z(eps=1e-5)-numpy-float32',
               'norm:z(eps=1e-5)-numpy-float64', 'norm:z-numba-float64', 'norm:z-numpy-float32',
               'norm:z-numpy-float64', 'sigmoid+norm:z-numba-float32', 'sigmoid+norm:z-numba-float64',
               'sigmoid+norm:z-numpy-float32', 'sigmoid+norm:z-numpy-float64',
               'softplus+norm:z-numba-float32', 'softplus+norm:z-numba-float64',
               'softplus+norm:z-numpy-float32', 'softplus+norm:z-numpy-float64',
               'softsign+norm:mean-numba-float32', 'softsign+norm:mean-numba-float64',
               'softsign+norm:mean-numpy-float64', 'tanh+norm:z-numba-float32', 'tanh+norm:z-numba-float64',
               'tanh+norm:z-numpy-float32', 'tanh+norm:z-numpy-float64']
_mark('a row of equal values (or of one value) is not centred to exactly 0: the mean of equal '
      'numbers is rounded ((0.1+0.1+0.1)/3 != 0.1) and, on the Numba backend, the per-element '
      'value is computed twice in different ways, so z - mean and the VJP for a constant dy are '
      'not 0 (numba float32 softplus+norm:z: VJP 7.4 at [0.7], truth 0)',
      "test_rowwise_constant_rows_exact", CONST_EXACT)

ROW_INF = ['mish+softmin-numba-float32', 'mish+softmin-numba-float64', 'mish+softmin-numpy-float32',
           'mish+softmin-numpy-float64', 'norm:mean+softmax-numba-float32',
           'norm:mean+softmax-numba-float64', 'norm:mean+softmax-numpy-float32',
           'norm:mean+softmax-numpy-float64', 'norm:mean-numba-float32', 'norm:mean-numpy-float32',
           'norm:std+sigmoid-numba-float32', 'norm:std+sigmoid-numba-float64',
           'norm:std+sigmoid-numpy-float32', 'norm:std+sigmoid-numpy-float64',
           'norm:z(eps=1e-5)-numba-float32', 'norm:z(eps=1e-5)-numba-float64',
           'norm:z(eps=1e-5)-numpy-float32', 'norm:z(eps=1e-5)-numpy-float64',
           'norm:z+softmax-numba-float32', 'norm:z+softmax-numba-float64', 'norm:z+softmax-numpy-float32',
           'norm:z+softmax-numpy-float64', 'norm:z-numba-float32', 'norm:z-numba-float64',
           'norm:z-numpy-float32', 'norm:z-numpy-float64', 'softplus+norm:z-numba-float32',
           'softplus+norm:z-numba-float64', 'softplus+norm:z-numpy-float32',
           'softplus+norm:z-numpy-float64', 'softsign+norm:mean-numba-float32',
           'softsign+norm:mean-numba-float64', 'softsign+norm:mean-numpy-float32',
           'softsign+norm:mean-numpy-float64']
_mark('a row holding one +-inf gives NaN where the limit exists (norm:mean([inf, 0, 1]) -> '
      '[inf, -inf, -inf], norm:z -> [sqrt 2, -1/sqrt 2, -1/sqrt 2], softsign+norm:mean: '
      'softsign(-inf) is NaN)',
      "test_rowwise_limits_and_nan", ROW_INF)

SCALAR = ['numba', 'numpy']
_mark("compile('prelu').vjp(0.7, 1.0, r=0.1) raises NumPy's AxisError (a Python float for a "
      'learnable parameter)',
      "test_learnable_scalars", SCALAR)

ROW_HUGE = ['elu+norm:std-numba-float32-forward-huge', 'elu+norm:std-numba-float32-vjp-huge',
            'elu+norm:std-numba-float64-forward-huge', 'elu+norm:std-numba-float64-vjp-huge',
            'elu+norm:std-numpy-float64-forward-huge', 'elu+norm:std-numpy-float64-vjp-huge',
            'norm:max(eps=0.5)-numba-float32-vjp-huge', 'norm:max(eps=0.5)-numba-float64-vjp-huge',
            'norm:max(eps=0.5)-numpy-float64-vjp-huge', 'norm:max+tanh-numba-float32-vjp-huge',
            'norm:max+tanh-numba-float64-vjp-huge', 'norm:max+tanh-numpy-float64-vjp-huge',
            'norm:max-numba-float32-vjp-huge', 'norm:max-numba-float64-vjp-huge',
            'norm:max-numpy-float64-vjp-huge', 'norm:mean+softmax-numba-float32-forward-huge',
            'norm:mean+softmax-numba-float32-vjp-huge', 'norm:mean+softmax-numba-float64-forward-huge',
            'norm:mean+softmax-numba-float64-vjp-huge', 'norm:mean+softmax-numpy-float64-forward-huge',
            'norm:mean+softmax-numpy-float64-vjp-huge', 'norm:mean-numba-float32-forward-huge',
            'norm:mean-numba-float64-forward-huge', 'norm:mean-numpy-float64-forward-huge',
            'norm:std+sigmoid-numba-float32-forward-huge', 'norm:std+sigmoid-numba-float32-vjp-huge',
            'norm:std+sigmoid-numba-float64-forward-huge', 'norm:std+sigmoid-numba-float64-vjp-huge',
            'norm:std+sigmoid-numpy-float64-forward-huge', 'norm:std+sigmoid-numpy-float64-vjp-huge',
            'norm:std-numba-float32-forward-huge', 'norm:std-numba-float32-vjp-huge',
            'norm:std-numba-float64-forward-huge', 'norm:std-numba-float64-vjp-huge',
            'norm:std-numpy-float64-forward-huge', 'norm:std-numpy-float64-vjp-huge',
            'norm:z(eps=1e-5)-numba-float32-forward-huge', 'norm:z(eps=1e-5)-numba-float32-vjp-huge',
            'norm:z(eps=1e-5)-numba-float64-forward-huge', 'norm:z(eps=1e-5)-numba-float64-vjp-huge',
            'norm:z(eps=1e-5)-numpy-float64-forward-huge', 'norm:z(eps=1e-5)-numpy-float64-vjp-huge',
            'norm:z+softmax-numba-float32-forward-huge', 'norm:z+softmax-numba-float32-vjp-huge',
            'norm:z+softmax-numba-float64-forward-huge', 'norm:z+softmax-numba-float64-vjp-huge',
            'norm:z+softmax-numpy-float64-forward-huge', 'norm:z+softmax-numpy-float64-vjp-huge',
            'norm:z-numba-float32-forward-huge', 'norm:z-numba-float32-vjp-huge',
            'norm:z-numba-float64-forward-huge', 'norm:z-numba-float64-vjp-huge',
            'norm:z-numpy-float64-forward-huge', 'norm:z-numpy-float64-vjp-huge',
            'softplus+norm:z-numba-float32-forward-huge', 'softplus+norm:z-numba-float32-vjp-huge',
            'softplus+norm:z-numba-float64-forward-huge', 'softplus+norm:z-numba-float64-vjp-huge',
            'softplus+norm:z-numpy-float64-forward-huge', 'softplus+norm:z-numpy-float64-vjp-huge']
_mark('rows near the largest floats overflow before they normalise (f64 [1e300, -1e300, 0], f32 '
      '[2e19, -2e19, 1] and [3e38, -3e38, 0]): norm:std/norm:z give 0 or NaN, their VJPs NaN, '
      "norm:mean's mean becomes -inf, norm:max's VJP divides by max|z|^2, which overflows "
      '(wrong by 60%)',
      "test_rowwise_against_mpmath", ROW_HUGE)

ROW_CONST = ['elu+norm:std-numba-float64-forward-constant', 'elu+norm:std-numba-float64-vjp-constant',
             'elu+norm:std-numpy-float64-forward-constant', 'elu+norm:std-numpy-float64-vjp-constant',
             'norm:mean-numba-float64-forward-constant', 'norm:mean-numpy-float64-forward-constant',
             'norm:std-numba-float64-forward-constant', 'norm:std-numba-float64-vjp-constant',
             'norm:std-numpy-float64-forward-constant', 'norm:std-numpy-float64-vjp-constant',
             'norm:z(eps=1e-5)-numba-float64-forward-constant',
             'norm:z(eps=1e-5)-numba-float64-vjp-constant',
             'norm:z(eps=1e-5)-numpy-float64-forward-constant',
             'norm:z(eps=1e-5)-numpy-float64-vjp-constant', 'norm:z+softmax-numba-float64-vjp-constant',
             'norm:z+softmax-numpy-float64-vjp-constant', 'norm:z-numba-float64-forward-constant',
             'norm:z-numba-float64-vjp-constant', 'norm:z-numpy-float64-forward-constant',
             'norm:z-numpy-float64-vjp-constant', 'sigmoid+norm:z-numba-float64-forward-constant',
             'sigmoid+norm:z-numba-float64-vjp-constant', 'sigmoid+norm:z-numpy-float32-forward-constant',
             'sigmoid+norm:z-numpy-float64-forward-constant', 'sigmoid+norm:z-numpy-float64-vjp-constant',
             'softplus+norm:z-numba-float32-forward-constant', 'softplus+norm:z-numba-float32-vjp-constant',
             'softplus+norm:z-numpy-float32-forward-constant', 'softplus+norm:z-numpy-float32-vjp-constant',
             'softsign+norm:mean-numba-float64-forward-constant',
             'softsign+norm:mean-numpy-float64-forward-constant',
             'tanh+norm:z+softmax-numba-float64-vjp-constant',
             'tanh+norm:z+softmax-numpy-float64-vjp-constant', 'tanh+norm:z-numba-float64-forward-constant',
             'tanh+norm:z-numba-float64-vjp-constant', 'tanh+norm:z-numpy-float64-forward-constant',
             'tanh+norm:z-numpy-float64-vjp-constant']
_mark('constant rows: the mean of equal values is rounded (no shift by a row element), so '
      'norm:* are off on [0.1]*3 (norm:mean -1.4e-17, norm:std 1e7 (1 - 1.4e-9), and through '
      '1/eps their VJPs by ~1e-9 relative); Numba float32 computes u twice differently',
      "test_rowwise_against_mpmath", ROW_CONST)

ROW_LEN1 = ['sigmoid+norm:z-numba-float32-vjp-length1', 'sigmoid+norm:z-numba-float64-vjp-length1',
            'sigmoid+norm:z-numpy-float32-vjp-length1', 'sigmoid+norm:z-numpy-float64-vjp-length1',
            'softplus+norm:z-numba-float32-vjp-length1', 'softplus+norm:z-numba-float64-vjp-length1',
            'softplus+norm:z-numpy-float64-vjp-length1', 'softsign+norm:mean-numba-float32-vjp-length1',
            'softsign+norm:mean-numba-float64-vjp-length1', 'tanh+norm:z-numba-float32-vjp-length1',
            'tanh+norm:z-numba-float64-vjp-length1',
            'tanh+norm:z-numpy-float64-vjp-length1']
_mark("length-1 rows: elementwise+norm:z's VJP is not 0 (truth 0): the per-element value is "
      "computed twice, differently (seen here through PyTorch's comparison)",
      "test_torch_agrees_rowwise",
      ["tanh+norm:z-float64", "softplus+norm:z-float32", "softplus+norm:z-float64"])
_mark("length-1 rows: the VJP of elementwise+norm:z (and, on Numba, +norm:mean) is not 0 "
      "(truth 0; -3.7e-9 and worse): the per- "
      'element value is computed twice, differently, and 1/eps amplifies the difference',
      "test_rowwise_against_mpmath", ROW_LEN1)

ROW_FARMEAN = ['norm:mean-numba-float32-forward-farmean', 'norm:mean-numba-float64-forward-farmean',
               'norm:mean-numpy-float64-forward-farmean', 'norm:z(eps=1e-5)-numba-float32-forward-farmean',
               'norm:z(eps=1e-5)-numba-float32-vjp-farmean', 'norm:z(eps=1e-5)-numba-float64-forward-farmean',
               'norm:z(eps=1e-5)-numba-float64-vjp-farmean', 'norm:z(eps=1e-5)-numpy-float64-forward-farmean',
               'norm:z(eps=1e-5)-numpy-float64-vjp-farmean', 'norm:z-numba-float32-forward-farmean',
               'norm:z-numba-float32-vjp-farmean', 'norm:z-numba-float64-forward-farmean',
               'norm:z-numba-float64-vjp-farmean', 'norm:z-numpy-float64-forward-farmean',
               'norm:z-numpy-float64-vjp-farmean', 'softplus+norm:z-numba-float32-forward-farmean',
               'softplus+norm:z-numba-float32-vjp-farmean', 'softplus+norm:z-numba-float64-forward-farmean',
               'softplus+norm:z-numba-float64-vjp-farmean', 'softplus+norm:z-numpy-float64-forward-farmean',
               'softplus+norm:z-numpy-float64-vjp-farmean']
_mark('item 3: rows whose mean is far larger than their spread (1e4 + N(0,1), 1e6 + N(0,1)) '
      'lose eps * |mean| / std in z - mean (norm:mean, norm:z and compositions); the bound is '
      "16 eps of the row's output scale",
      "test_rowwise_against_mpmath", ROW_FARMEAN)

ROW_TINY = ['norm:z-numba-float32-forward-tiny', 'tanh+norm:z-numba-float32-forward-tiny']
_mark('Numba float32: a row of subnormals is centred in float32, where z - mean keeps no '
      'relative precision (norm:z off by 20% on [1e-45, 0, -4e-45])',
      "test_rowwise_against_mpmath", ROW_TINY)

# Found after issue 15's fixes merged (integration run, stop 21): Numba's VJP of norm:z+softmax on a
# constant float32 row near the largest float raises ZeroDivisionError from inside the kernel
# (the row's scale and spread reach 0 there; the kernel is compiled with error_model="numpy",
# so the division comes from elsewhere: to be found). NumPy's backend gives a value.
_mark("Numba's norm:z+softmax VJP raises ZeroDivisionError on a constant float32 row of "
      "3.2e38 (issue 15)", "test_no_floating_point_warnings", ["norm:z+softmax-numba-float32"])
_mark("Numba's norm:z+softmax VJP raises ZeroDivisionError on a constant row near the largest "
      "float (issue 15)", "test_no_floating_point_warnings", ["norm:z+softmax-numba-float64"])
_mark("softsign+norm:mean on a constant float32 row is not exactly 0 on the NumPy backend "
      "(issue 15)", "test_rowwise_constant_rows_exact", ["softsign+norm:mean-numpy-float32"])
# Here actdsl now matches the truth and torch is the one off it (constant rows such as [0.1]*3:
# torch's mean is rounded, actdsl's row is shifted by its maximum first): these belong in
# oracle_torch.TORCH_WRONG, with the rows named; until then the disagreement is expected.
_mark("torch is off the truth on constant rows where actdsl is exact since issue 15's fixes: "
      "to be recorded in TORCH_WRONG", "test_torch_agrees_rowwise",
      ["norm:mean-float64", "norm:std-float64", "norm:z-float64"])
