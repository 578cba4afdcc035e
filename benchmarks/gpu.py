"""CUDA benchmark: actdsl's cuda backend against PyTorch on the GPU, 16384x4096 float32.

    python benchmarks/gpu.py [--rows 16384 --units 4096] [--json FILE] [--compile-budget 150]

For every seed key and tanh+norm:z: forward and VJP (dL/dx from x and dL/dy) of actdsl (device
arrays: PyTorch tensors passed through ``__cuda_array_interface__``, results written with
``out=``), PyTorch eager (``torch.nn.functional``; the backward is autograd's backward alone, on a
graph built once), and ``torch.compile`` where it works within the budget. Times are CUDA-event
medians of repeated runs of 10 back-to-back calls; GB/s counts the bytes an ideal kernel moves
(forward: read x, write y; VJP: read x and dy, write dx); "of copy" is that bandwidth over a
device-to-device copy's (``y.copy_(x)``), measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

SEED = ["linear", "sigmoid", "logistic", "tanh", "softplus", "softmax", "relu", "rect:max",
        "rect:min", "trel", "trec", "tlin", "norm:mean", "norm:max", "norm:std", "norm:z", "prelu",
        "lgrelu", "maxout:3", "tanh+norm:z"]


def host_us(torch, fn, n=200):
    """Host time per call, launches queued back to back (the GPU may still be busy after)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t0
    torch.cuda.synchronize()
    return dt / n * 1e6


def timer(torch, fn, reps=15, inner=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--units", type=int, default=4096)
    ap.add_argument("--specs", nargs="*", default=SEED)
    ap.add_argument("--json", default=None)
    ap.add_argument("--compile-budget", type=float, default=150.0,
                    help="seconds to spend on torch.compile before skipping it")
    args = ap.parse_args(argv)

    import torch
    import actdsl

    dev = torch.cuda.get_device_name()
    R, N = args.rows, args.units
    torch.manual_seed(0)
    x = torch.randn(R, N, device="cuda") * 2
    g = torch.randn_like(x)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    t_copy = timer(torch, lambda: y.copy_(x))
    copy_gbs = 2 * nbytes / t_copy / 1e6
    print(f"{dev}; {R}x{N} float32; device-to-device copy {t_copy:.3f} ms = {copy_gbs:.0f} GB/s")
    table = peers.torch_table()      # forward under no_grad, backward via autograd
    plain = peers.torch_forwards()   # for graphs built once and for torch.compile
    compile_left = args.compile_budget
    rows = []
    hdr = f"{'spec':<14}{'pass':<5}{'actdsl ms':>10}{'GB/s':>7}{'of copy':>8}{'eager ms':>10}" \
          f"{'compile ms':>11}{'vs eager':>9}{'max err':>10}{'host us':>14}{'1st call s':>11}"
    print(hdr)
    print("(host us: host time per forward call, actdsl/eager; 1st call s: compile + first run)")
    for spec in args.specs:
        k = actdsl.compile(spec, backend="cuda")
        p = k.init_params(N, rng=0)
        tp = {name: torch.as_tensor(v, device="cuda", dtype=torch.float32) for name, v in p.items()}
        fwd, bwd = table[spec]
        t0 = time.perf_counter()
        k(x, out=y, **p)
        k.vjp(x, g, out=y, **p)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        # correctness against torch on this data
        k(x, out=y, **p)
        torch.cuda.synchronize()
        ref = fwd(x, tp)
        err_f = float(((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item())
        k.vjp(x, g, out=y, **p)
        torch.cuda.synchronize()
        ref_b = bwd(x, g, tp)
        err_b = float(((y - ref_b).abs().max() / ref_b.abs().max().clamp_min(1e-30)).item())
        del ref, ref_b
        ours_f = timer(torch, lambda: k(x, out=y, **p))
        ours_b = timer(torch, lambda: k.vjp(x, g, out=y, **p))
        eager_f = timer(torch, lambda: fwd(x, tp))
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            graph = plain[spec](xr, tp)
        eager_b = timer(torch, lambda: torch.autograd.grad(graph, xr, g, retain_graph=True))
        host = (host_us(torch, lambda: k(x, out=y, **p)), host_us(torch, lambda: fwd(x, tp)))
        comp_f = comp_b = None
        if compile_left > 0:
            torch._dynamo.reset()
            t0 = time.perf_counter()
            try:
                cf = torch.compile(lambda a: plain[spec](a, tp))
                comp_f = timer(torch, lambda: cf(x))
                xr = x.detach().requires_grad_(True)
                cg = torch.compile(lambda a, b: torch.autograd.grad(plain[spec](a, tp), a, b)[0])
                comp_b = timer(torch, lambda: cg(xr, g))
            except Exception as e:  # reported, not hidden
                print(f"  torch.compile failed for {spec}: {type(e).__name__}: {str(e)[:120]}")
            compile_left -= time.perf_counter() - t0
        for what, ours, eager, comp, moved, err in (("fwd", ours_f, eager_f, comp_f, 2, err_f),
                                                    ("vjp", ours_b, eager_b, comp_b, 3, err_b)):
            gbs = moved * nbytes / ours / 1e6
            best = min(t for t in (eager, comp) if t is not None)
            rows.append(dict(spec=spec, pass_name=what, ms=ours, gbs=gbs, of_copy=gbs / copy_gbs,
                             eager_ms=eager, compile_ms=comp, vs_best_peer=ours / best,
                             max_rel_err=err, first_call_s=first, host_us_fwd=host))
            print(f"{spec:<14}{what:<5}{ours:>10.3f}{gbs:>7.0f}{gbs / copy_gbs:>8.2f}{eager:>10.3f}"
                  f"{(f'{comp:.3f}' if comp else '-'):>11}{ours / eager:>9.2f}{err:>10.1e}"
                  f"{(f'{host[0]:.0f}/{host[1]:.0f}' if what == 'fwd' else ''):>14}"
                  f"{(f'{first:.2f}' if what == 'fwd' else ''):>11}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=dev, rows_x_units=[R, N],
                                                   copy_ms=t_copy, copy_gbs=copy_gbs,
                                                   results=rows), indent=1))
    elem = [r for r in rows if r["spec"] not in ("softmax", "norm:mean", "norm:max", "norm:std",
                                                 "norm:z", "tanh+norm:z")]
    print(f"elementwise at >= 80% of copy bandwidth: {sum(r['of_copy'] >= 0.8 for r in elem)}/{len(elem)}; "
          f"as fast as eager or faster: {sum(r['ms'] <= r['eager_ms'] for r in rows)}/{len(rows)}")



if __name__ == "__main__":
    main()
