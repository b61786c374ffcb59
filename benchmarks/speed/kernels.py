"""Benchmark the Triton kernels against the PyTorch reference (eager and torch.compile).

    python benchmarks/speed/kernels.py                  # on a CUDA machine: timings
    python benchmarks/speed/kernels.py --peak-gbps 3350 # when the GPU is not in the table below

On CUDA it times, with triton.testing.do_bench (median), the discretized logistic
mixture forward and forward+backward for CIFAR-like (C=3) and MNIST-like (C=1)
shapes, and logmeanexp over S = 1000 importance samples, and prints achieved
bandwidth against the GPU's peak. Bandwidth counts the bytes any implementation
must move (inputs read once, outputs written once; forward+backward reads x and
params twice and writes a params-sized gradient), so the three columns compare
like with like. Without CUDA it says so and runs a small correctness smoke check
of the kernels under Triton's interpreter instead.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch

from hvae_detect.kernels.layout import dlogmix_param_channels  # imports no triton: TRITON_INTERPRET can follow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

# Peak memory bandwidth in GB/s by device-name substring, most specific first.
PEAK_GBPS = [
    ("H200", 4800),
    ("H100 NVL", 3900),
    ("H100 PCIe", 2000),
    ("H100", 3350),
    ("GH200", 4000),
    ("B200", 8000),
    ("A100-SXM4-80GB", 2039),
    ("A100 80GB PCIe", 1935),
    ("A100", 1555),
    ("L40S", 864),
    ("L4", 300),
    ("A10G", 600),
    ("RTX 4090", 1008),
    ("V100", 900),
]


def peak_gbps(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def make_dlogmix_inputs(n, c, m, h, w, device, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g).float().div(255)
    params = torch.randn(n, dlogmix_param_channels(c, m), h, w, generator=g)
    return x.to(device), params.to(device=device, dtype=dtype)


# ---------------------------------------------------------------- CUDA timings


def bench_dlogmix(args, peak):
    from triton.testing import do_bench

    from hvae_detect.kernels.dlogmix import dlogmix_log_prob_triton
    from hvae_detect.likelihoods import discretized_logistic_mixture_log_prob_reference as reference

    impls = {"eager": reference, "compile": torch.compile(reference, dynamic=False), "triton": dlogmix_log_prob_triton}
    print("\n## discretized logistic mixture, M=10, float32 params (median ms; GB/s; % of peak)")
    print(f"{'shape':<28}{'pass':<9}" + "".join(f"{k:>26}" for k in impls) + f"{'x eager':>9}{'x compile':>10}")
    for label, c, hw in (("CIFAR-like", 3, 32), ("MNIST-like", 1, 28)):
        for n in (128, 1000):
            x, params = make_dlogmix_inputs(n, c, 10, hw, hw, "cuda")
            err = (impls["triton"](x, params) - reference(x, params)).abs().max().item()
            io = x.nbytes + params.nbytes + 4 * n
            grad_out = torch.ones(n, device="cuda")
            p = params.clone().requires_grad_(True)
            cases = {
                "fwd": (io, lambda f: lambda: f(x, params)),  # noqa: F821 (ruff misreads nested lambdas)
                "fwd+bwd": (2 * io + params.nbytes, lambda f: lambda: f(x, p).backward(grad_out)),  # noqa: F821
            }
            for pass_name, (nbytes, make) in cases.items():
                ms = {}
                for name, f in impls.items():
                    fn = make(f)
                    fn()  # compile / warm up outside the timed region
                    ms[name] = do_bench(fn, warmup=25, rep=100, grad_to_none=[p], return_mode="median")
                cells = "".join(f"{ms[k]:>9.3f} {_gbps(nbytes, ms[k], peak):>16}" for k in impls)
                shape = f"{label} N={n} {c}x{hw}x{hw}"
                print(
                    f"{shape:<28}{pass_name:<9}{cells}{ms['eager'] / ms['triton']:>8.1f}x{ms['compile'] / ms['triton']:>9.1f}x"
                )
            print(f"{'':<28}max |triton - reference| forward = {err:.2e} nats")
            del x, params, p
            torch.cuda.empty_cache()


def bench_logmeanexp(args, peak):
    from triton.testing import do_bench

    from hvae_detect.kernels.logsumexp import logmeanexp_triton
    from hvae_detect.kernels.reference import logmeanexp_reference

    impls = {
        "eager": logmeanexp_reference,
        "compile": torch.compile(logmeanexp_reference, dynamic=False),
        "triton": logmeanexp_triton,
    }
    print("\n## logmeanexp over S=1000 importance samples, float32 (median ms; GB/s; % of peak)")
    print(f"{'shape':<28}" + "".join(f"{k:>26}" for k in impls) + f"{'x eager':>9}{'x compile':>10}")
    for n in (1000, 100_000):
        log_w = torch.randn(1000, n, device="cuda") * 10 - 300
        ms = {}
        for name, f in impls.items():
            f(log_w)
            ms[name] = do_bench(lambda: f(log_w), warmup=25, rep=100, return_mode="median")
        cells = "".join(f"{ms[k]:>9.3f} {_gbps(log_w.nbytes, ms[k], peak):>16}" for k in impls)
        print(f"{f'S=1000 N={n}':<28}{cells}{ms['eager'] / ms['triton']:>8.1f}x{ms['compile'] / ms['triton']:>9.1f}x")


def _gbps(nbytes, ms, peak):
    gbps = nbytes / (ms * 1e-3) / 1e9
    return f"{gbps:7.0f} GB/s" + (f" {100 * gbps / peak:3.0f}%" if peak else "     ")


# ---------------------------------------------------------------- CPU smoke check


def smoke_check() -> bool:
    """Kernels vs references on tiny shapes through Triton's interpreter."""
    from hvae_detect.kernels.dlogmix import dlogmix_log_prob_triton
    from hvae_detect.kernels.logsumexp import logmeanexp_triton, streaming_update_triton
    from hvae_detect.kernels.reference import logmeanexp_reference, streaming_update_reference
    from hvae_detect.likelihoods import discretized_logistic_mixture_log_prob_reference as reference

    ok = True

    def report(what, err, tol):
        nonlocal ok
        ok &= err <= tol
        print(f"  {what:<52} max abs err {err:.2e}  {'ok' if err <= tol else 'FAIL'} (tol {tol:g})")

    for c in (1, 3):
        for dtype in (torch.float32, torch.bfloat16):
            x, params = make_dlogmix_inputs(2, c, 10, 5, 7, "cpu", dtype, seed=c)
            grads = []
            outs = []
            for f in (reference, dlogmix_log_prob_triton):
                p = params.clone().requires_grad_(True)
                out = f(x, p)
                out.backward(torch.ones_like(out))
                outs.append(out.detach())
                grads.append(p.grad.float())
            rel = 1e-3 if dtype == torch.float32 else 2e-2
            report(
                f"dlogmix C={c} M=10 2x{c}x5x7 {str(dtype)[6:]} forward", (outs[0] - outs[1]).abs().max().item(), 1e-2
            )
            report(
                f"dlogmix C={c} M=10 2x{c}x5x7 {str(dtype)[6:]} d/dparams",
                (grads[0] - grads[1]).abs().max().item(),
                rel * grads[0].abs().max().item(),
            )
    log_w = torch.randn(50, 20) * 20
    log_w[::3, 4] = -math.inf
    log_w[:, 7] = -math.inf
    ref = logmeanexp_reference(log_w)
    got = logmeanexp_triton(log_w)
    same_inf = torch.equal(torch.isneginf(ref), torch.isneginf(got))
    report(
        "logmeanexp S=50 N=20 with -inf entries and column",
        (got - ref)[torch.isfinite(ref)].abs().max().item() if same_inf else math.inf,
        1e-4,
    )
    state, ref_state = (torch.full((20,), -math.inf), torch.zeros(20)), (torch.full((20,), -math.inf), torch.zeros(20))
    for chunk in log_w.split(13):
        state = streaming_update_triton(*state, chunk)
        ref_state = streaming_update_reference(*ref_state, chunk)
    streamed = state[0] + torch.log(state[1]) - math.log(50)
    report(
        "streaming update, chunks of 13, vs one-shot", (streamed - ref)[torch.isfinite(ref)].abs().max().item(), 1e-4
    )
    return ok


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--peak-gbps", type=float, default=None, help="peak memory bandwidth of the GPU in GB/s")
    args = parser.parse_args(argv)
    print(harness.header())
    if not torch.cuda.is_available():
        print(
            "CUDA is not available: the timings need a CUDA GPU. Running the interpreter smoke check instead "
            "(TRITON_INTERPRET=1, tiny shapes, kernels vs the PyTorch references)."
        )
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of the kernel modules
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning)  # numpy overflow in unselected branches
        ok = smoke_check()
        print("smoke check", "passed" if ok else "FAILED")
        return 0 if ok else 1

    import triton

    name = torch.cuda.get_device_name()
    peak = peak_gbps(name, args.peak_gbps)
    print(
        f"device: {name}; peak bandwidth: {f'{peak:.0f} GB/s' if peak else 'unknown (pass --peak-gbps)'}; "
        f"torch {torch.__version__}, triton {triton.__version__}"
    )
    bench_dlogmix(args, peak)
    bench_logmeanexp(args, peak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
