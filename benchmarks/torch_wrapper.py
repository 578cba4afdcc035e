"""actdsl.torch against PyTorch's own functions on the CPU (4096x4096 float32 by default).

    python benchmarks/torch_wrapper.py [--size 4096x4096] [--rounds 7]
    python benchmarks/torch_wrapper.py --train [--batch 128] [--hidden 512] [--steps 30] [--compiled]
    python benchmarks/torch_wrapper.py --train --compiled --check-fairness   # A/A: torch both sides

Forward (no grad) and forward+backward through autograd, medians of interleaved rounds.
``--train``: a small training loop (MLP in -> hidden -> hidden -> out, SGD, batch ``--batch``)
with actdsl's activation and with PyTorch's own, eager (and ``--compiled``: torch.compile,
fullgraph); median step time of interleaved rounds after a warm-up. Eager mode has a third
column, a control: PyTorch's own forward and backward ops (aten's ``*_backward``) called from a
Python ``torch.autograd.Function``, the least any activation written in Python pays to enter
autograd (actdsl's eager path is such a Function).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import actdsl.torch as at

sys.path.insert(0, str(Path(__file__).parent))
from bench import interleaved_ms  # noqa: E402

PEERS = {"relu": F.relu, "softplus": F.softplus, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "gelu": F.gelu, "silu": F.silu, "elu": F.elu,
         "softmax": lambda x: F.softmax(x, dim=-1), "log_softmax": lambda x: F.log_softmax(x, dim=-1)}


TRAIN = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus,
         "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "elu": torch.nn.ELU,
         "softmax": lambda: torch.nn.Softmax(dim=-1)}


def interleaved_medians(fns, rounds, seed=0):
    """Median milliseconds of each of ``fns``, each timed once every round in a new random order
    (``bench.interleaved_ms``, without its pause and warm-up: a training step is milliseconds).
    In a fixed order, what ran just before a call biased it: with PyTorch's own module in both
    columns (``--check-fairness``), in the order eager-actdsl, eager-torch, compiled-actdsl,
    compiled-torch, control, the compiled step timed right after an eager one took 4-7% longer
    than the same step timed after a compiled one, which made actdsl look slower than it was."""
    ms = interleaved_ms(dict(enumerate(fns)), rounds, seed, settle=0.0, warm_up=False)
    return [ms[i] for i in range(len(fns))]


A = torch.ops.aten
#: torch's own forward and backward of each TRAIN spec, as (f(x), backward(g, x, y))
OWN_OPS = {
    "relu": (torch.relu, lambda g, x, y: A.threshold_backward(g, x, 0.0)),
    "tanh": (torch.tanh, lambda g, x, y: A.tanh_backward(g, y)),
    "softplus": (F.softplus, lambda g, x, y: A.softplus_backward(g, x, 1.0, 20.0)),
    "gelu": (F.gelu, lambda g, x, y: A.gelu_backward(g, x)),
    "silu": (F.silu, lambda g, x, y: A.silu_backward(g, x)),
    "elu": (F.elu, lambda g, x, y: A.elu_backward(g, 1.0, 1.0, 1.0, False, x)),
    "softmax": (lambda x: F.softmax(x, -1),
                lambda g, x, y: A._softmax_backward_data(g, y, -1, x.dtype)),
}


def python_function(spec: str):
    """A module applying torch's own ops for ``spec`` through a Python autograd.Function."""
    forward, backward = OWN_OPS[spec]

    class Control(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = forward(x)
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, g):
            return backward(g, *ctx.saved_tensors)

    class Module(torch.nn.Module):
        def forward(self, x):
            return Control.apply(x)
    return Module


def _mlp(act, width: int, hidden: int):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), act(), torch.nn.Linear(hidden, hidden),
                               act(), torch.nn.Linear(hidden, 10))


def _compiled_alone(model):
    """torch.compile of ``model`` with a cache of its own. Compiled as it is, every Sequential
    shares one code object (Sequential.forward), whose compiled entries Dynamo tries newest
    first: the model compiled first would pay the other's failing guards on every call."""
    def run(t):
        return model(t)
    run.__code__ = run.__code__.replace(co_name=f"run_{id(model)}")  # a code object of its own
    return torch.compile(run, fullgraph=True)


def train(args):
    import platform
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"# MLP 256-{args.hidden}-{args.hidden}-10, batch {args.batch}, SGD; median step (ms)")
    modes = ["eager"] + (["compiled"] if args.compiled else [])
    print(f"{'spec':<10}" + "".join(f"{m + ' actdsl':>17}{m + ' torch':>16}" for m in modes)
          + f"{'torch in a Python Function':>28}")
    x = torch.randn(args.batch, 256)
    target = torch.randint(0, 10, (args.batch,))
    for spec, own in TRAIN.items():
        row = []
        if args.compiled:  # each row's models are compiled afresh (the earlier rows' graphs and
            torch._dynamo.reset()  # guards dropped)
        for mode in modes + ["control"]:
            steps = []
            ours = own if args.check_fairness else (lambda: at.Activation(spec))
            acts = (ours, own) if mode != "control" else (python_function(spec),)
            for act in acts:
                model = _mlp(act, 256, args.hidden)
                opt = torch.optim.SGD(model.parameters(), lr=1e-3)
                run = _compiled_alone(model) if mode == "compiled" else model

                def step(run=run, opt=opt):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(run(x), target).backward()
                    opt.step()
                for _ in range(3):  # warm-up (and compile)
                    step()
                steps.append(step)
            row.append(steps)
        # every variant of the spec timed in turn each round: the control in the same run
        row = interleaved_medians([s for group in row for s in group], args.steps)
        print(f"{spec:<10}" + "".join(f"{v:>17.2f}" if i % 2 == 0 else f"{v:>16.2f}"
                                      for i, v in enumerate(row[:-1])) + f"{row[-1]:>28.2f}",
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--compiled", action="store_true")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--check-fairness", action="store_true",
                    help="with --train: PyTorch's own module in the actdsl columns too (an A/A "
                         "run: any ratio away from 1 is the measurement's bias)")
    args = ap.parse_args()
    if args.train:
        return train(args)
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

        med = interleaved_medians([ours_f, theirs_f, ours_b, theirs_b], args.rounds)
        print(f"{spec:<12}{med[0]:>11.1f}{med[1]:>10.1f}{med[2]:>11.1f}{med[3]:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
