"""fp32 matrix products on this CPU: PyTorch's default (MKL) against oneDNN.

    python benchmarks/speed/linear_backends.py          # ~1 minute

For a 2048^2 product and for the three products of the Nature CNN's first dense layer
(forward, gradient of its input, gradient of its weight; batch 32 and the batch-1 acting
pass; flatten widths 3136 for padding valid and 7744 for same), it prints GFLOP/s through
``torch.mm``/``F.linear`` (MKL) and through ``torch.ops.mkldnn._linear_pointwise``
(oneDNN, what ``trainer.onednn_linear`` uses), the median of ``--repeats`` timed loops each.
For scale it also times the network's three convolutions (oneDNN in both cases). Last, the
whole gradient step (loss forward of the online and target nets, backward, per-tensor
clipping, Adam; batch 32) with ``trainer.onednn_linear=false`` and ``true``, for both paddings,
in ``--repeats`` alternating loops. On CPUs where MKL takes its AVX-512 path the two columns
should be close; on AMD CPUs MKL does not.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from _common import FixedBatchUpdate, compose_config

from emdqn.agent.networks import ONEDNN_MATMUL


def gflops(work: Callable[[], torch.Tensor], flops: float, repeats: int, min_seconds: float = 0.2) -> float:
    work()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds / 4:  # calls per loop for ~min_seconds
        work()
        calls += 1
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls * 4):
            work()
        rates.append(flops * calls * 4 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def step_milliseconds(step: Callable[[], None], steps: int = 30) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the training default: all cores)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not ONEDNN_MATMUL:
        raise SystemExit("this torch build has no oneDNN matmul (torch.ops.mkldnn._linear_pointwise)")
    torch.set_num_threads(args.threads)
    onednn = torch.ops.mkldnn._linear_pointwise  # a @ b^T (+ bias)

    def row(label: str, mkl: Callable, one: Callable, flops: float) -> None:
        torch.testing.assert_close(one(), mkl(), rtol=1e-3, atol=1e-3)
        mkl_rate, onednn_rate = gflops(mkl, flops, args.repeats), gflops(one, flops, args.repeats)
        print(f"{label:<44} {mkl_rate:>7.0f} {onednn_rate:>7.0f} {onednn_rate / mkl_rate:>6.2f}x")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GFLOP/s, fp32")
    print(f"{'product':<44} {'MKL':>7} {'oneDNN':>7} {'ratio':>7}")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    row("2048 x 2048 x 2048", lambda: a @ b, lambda: onednn(a, b.t(), None, "none", [], ""), 2 * 2048**3)
    for width in (3136, 7744):
        weight, bias = torch.randn(512, width) * 0.02, torch.zeros(512)
        for batch in (32, 1):
            features, upstream = torch.rand(batch, width), torch.randn(batch, 512)
            flops = 2 * batch * width * 512
            row(f"dense {width}->512, batch {batch}: forward",
                lambda: F.linear(features, weight, bias), lambda: onednn(features, weight, bias, "none", [], ""),
                flops)
            if batch == 1:
                continue
            row(f"dense {width}->512, batch {batch}: input gradient",
                lambda: upstream @ weight, lambda: onednn(upstream, weight.t(), None, "none", [], ""), flops)
            row(f"dense {width}->512, batch {batch}: weight gradient",
                lambda: upstream.t() @ features, lambda: onednn(upstream.t(), features.t(), None, "none", [], ""),
                flops)
    print("convolutions (oneDNN, channels-last, batch 32, forward):")
    for in_channels, out_channels, kernel, stride, size in ((4, 32, 8, 4, 84), (32, 64, 4, 2, 20), (64, 64, 3, 1, 9)):
        inputs = torch.randn(32, in_channels, size, size).contiguous(memory_format=torch.channels_last)
        filters = torch.randn(out_channels, in_channels, kernel, kernel)
        out_size = (size - kernel) // stride + 1
        flops = 2 * 32 * out_size**2 * out_channels * in_channels * kernel**2
        rate = gflops(lambda: F.conv2d(inputs, filters, stride=stride), flops, args.repeats)
        print(f"  {in_channels}->{out_channels}, kernel {kernel}, stride {stride}: {rate:.0f}")
    print("whole gradient step, ms (alternating repeats): MKL dense layers | oneDNN dense layers")
    for padding in ("valid", "same"):
        steps = {}
        for flag in (False, True):
            torch.manual_seed(0)
            steps[flag] = FixedBatchUpdate(compose_config(
                ["env=pong", f"model.padding={padding}", f"trainer.onednn_linear={flag}"]))
        for step in steps.values():
            step_milliseconds(step, 5)  # warm-up: oneDNN primitives, Adam's state
        timings: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for flag, step in steps.items():
                timings[flag].append(step_milliseconds(step))
        mkl, onednn_ms = statistics.median(timings[False]), statistics.median(timings[True])
        print(f"  padding {padding}: {mkl:.2f} ({', '.join(f'{t:.2f}' for t in timings[False])}) | "
              f"{onednn_ms:.2f} ({', '.join(f'{t:.2f}' for t in timings[True])}): {mkl / onednn_ms:.2f}x")


if __name__ == "__main__":
    main()
