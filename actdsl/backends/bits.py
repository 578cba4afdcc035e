"""Bit casts between floats and integers of the same width, as Numba intrinsics (one LLVM
``bitcast``, which vectorizes)."""
from numba import types
from numba.extending import intrinsic


def _bitcast(src, dst):
    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(dst))
        return dst(src), codegen
    return cast


f64_bits, bits_f64 = _bitcast(types.float64, types.int64), _bitcast(types.int64, types.float64)
f32_bits, bits_f32 = _bitcast(types.float32, types.int32), _bitcast(types.int32, types.float32)
