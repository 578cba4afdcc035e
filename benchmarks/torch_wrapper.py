"""actdsl.torch against PyTorch's own functions on the CPU (4096x4096 float32 by default).

    python benchmarks/torch_wrapper.py [--size 4096x4096] [--rounds 7]

Forward (no grad) and forward+backward through autograd, medians of interleaved rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import actdsl.torch as at

PEERS = {"relu": F.relu, "softplus": F.softplus, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "gelu": F.gelu, "silu": F.silu, "elu": F.elu,
         "softmax": lambda x: F.softmax(x, dim=-1), "log_softmax": lambda x: F.log_softmax(x, dim=-1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rows, units = (int(v) for v in args.size.split("x"))
    x = torch.randn(rows, units)
    g = torch.randn_like(x)
    print(f"{'spec':<12}{'actdsl fwd':>11}{'torch fwd':>10}{'actdsl f+b':>11}{'torch f+b':>10}  ms")
    for spec, peer in PEERS.items():
        at.apply(spec, x)  # compile

        def ours_f():
            with torch.no_grad():
                at.apply(spec, x)

        def theirs_f():
            with torch.no_grad():
                peer(x)

        def ours_b():
            xr = x.detach().requires_grad_(True)
            at.apply(spec, xr).backward(g)

        def theirs_b():
            xr = x.detach().requires_grad_(True)
            peer(xr).backward(g)

        fns = [ours_f, theirs_f, ours_b, theirs_b]
        times = [[] for _ in fns]
        for _ in range(args.rounds):
            for i, fn in enumerate(fns):
                t = time.perf_counter()
                fn()
                times[i].append((time.perf_counter() - t) * 1e3)
        med = [statistics.median(t) for t in times]
        print(f"{spec:<12}{med[0]:>11.1f}{med[1]:>10.1f}{med[2]:>11.1f}{med[3]:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
