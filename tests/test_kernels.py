"""Triton kernels against the PyTorch references, and the kernel dispatch.

Without a GPU the kernels run on CPU tensors through Triton's interpreter. The
interpreter is chosen when a function is decorated with @triton.jit, triton's own
helpers included, so TRITON_INTERPRET must be set before triton is first imported;
this module sets it at the top and skips with a reason if some earlier module
already imported triton natively. With a GPU (and TRITON_INTERPRET unset) the same
tests run natively on CUDA tensors. Shapes are kept tiny because the interpreter
runs every program in Python.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
_TRITON_ALREADY_IMPORTED = "triton" in sys.modules
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")
if not ON_GPU and _TRITON_ALREADY_IMPORTED and type(triton.language.sigmoid).__name__ != "InterpretedFunction":
    # triton.language's own @jit helpers were compiled natively and cannot run in the interpreter.
    pytest.skip(
        "triton was imported before TRITON_INTERPRET=1 was set; run this file on its own or export TRITON_INTERPRET=1",
        allow_module_level=True,
    )

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hvae_detect.kernels import dispatch, dlogmix  # noqa: E402
from hvae_detect.kernels import logsumexp as lse  # noqa: E402
from hvae_detect.kernels.layout import split_dlogmix_params  # noqa: E402
from hvae_detect.kernels.reference import (  # noqa: E402
    discretized_logistic_log_prob_per_component,
    streaming_update_reference,
)
from hvae_detect.likelihoods import (  # noqa: E402
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_log_prob_reference,
)
from hvae_detect.scoring.engine import StreamingLogMeanExp, logmeanexp  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow in unselected branches


# ---------------------------------------------------------------- discretized logistic mixture


def make_inputs(seed, n, c, m, h, w, regime, dtype=torch.float32):
    """x on the 256-level grid and params in the layout of kernels/layout.py, for one numerical regime.

    regime: "random" (moderate scales), "edges" (half the pixels at 0 or 255),
    "clamp" (log-scales at or below -7, means on or near the pixel, so both the
    clamp and the tiny-bin branch are hit), "tiny" (bins far in a tail: mass <= 1e-5).
    """
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, c, h, w), generator=g)
    if regime in ("edges", "clamp"):
        edge = torch.rand(levels.shape, generator=g) < 0.5
        levels = torch.where(edge, 255 * torch.randint(0, 2, levels.shape, generator=g), levels)
    x = levels.float() / 255
    xs = (2 * x - 1).unsqueeze(1)  # (N, 1, C, H, W): broadcast over components
    logits = torch.randn(n, m, h, w, generator=g) * 2
    means = torch.rand(n, m, c, h, w, generator=g) * 2.4 - 1.2
    log_scales = torch.rand(n, m, c, h, w, generator=g) * 3 - 3  # [-3, 0]
    coeffs = torch.randn(n, m, c, h, w, generator=g)
    if regime == "clamp":
        pick = torch.randint(0, 3, log_scales.shape, generator=g)
        below = -7 - 5 * torch.rand(log_scales.shape, generator=g)
        log_scales = torch.where(
            pick == 0, torch.full_like(log_scales, -7.0), torch.where(pick == 1, below, log_scales)
        )
        near = xs + 0.004 * torch.randn(means.shape, generator=g)
        means = torch.where(torch.rand(means.shape, generator=g) < 0.5, near, means)
    if regime == "tiny":
        sign = torch.where(torch.rand(means.shape, generator=g) < 0.5, -1.0, 1.0)
        means = xs + sign * (0.6 + torch.rand(means.shape, generator=g))
        log_scales = -3 - torch.rand(log_scales.shape, generator=g)  # |x - mu| / s >= 12
        coeffs = coeffs * 0  # keep the coupled means where they were put
    if c == 1:
        params = torch.cat([logits, means[:, :, 0], log_scales[:, :, 0]], dim=1)
    else:
        per_channel = [torch.cat([means[:, :, k], log_scales[:, :, k], coeffs[:, :, k]], dim=1) for k in range(3)]
        params = torch.cat([logits, *per_channel], dim=1)
    return x.to(DEVICE), params.to(dtype).to(DEVICE)


def forward_and_grad(fn, x, params, grad_out):
    p = params.clone().requires_grad_(True)
    out = fn(x, p)
    out.backward(grad_out)
    return out.detach(), p.grad


TOL = {  # (forward rtol, forward atol, gradient atol relative to the largest gradient)
    # On an H200 one gradient element of test_dlogmix_multiple_blocks_per_image was 1.8e-4 of
    # the largest gradient from the reference, likely because natively tl.exp/tl.log lower to
    # the hardware's approximate ex2/lg2 (the interpreter uses numpy's): the GPU gets 3e-4.
    torch.float32: (1e-5, 1e-3, 3e-4 if ON_GPU else 1e-4),
    torch.float16: (1e-4, 5e-3, 4e-3),
    torch.bfloat16: (1e-4, 5e-3, 1.6e-2),
}


def reference_float64(x, params):
    """The reference's mixture in float64 (the reference itself always computes in float32)."""
    logits, means, log_scales, coeffs = split_dlogmix_params(params.double(), x.shape[1])
    xs = (x.double() * 2 - 1).unsqueeze(2)
    if x.shape[1] == 3:
        c = torch.tanh(coeffs)
        means = torch.stack(
            [means[:, 0], means[:, 1] + c[:, 0] * xs[:, 0], means[:, 2] + c[:, 1] * xs[:, 0] + c[:, 2] * xs[:, 1]],
            dim=1,
        )
    log_probs = discretized_logistic_log_prob_per_component(xs, means, log_scales).sum(1)
    return torch.logsumexp(log_probs + torch.log_softmax(logits, dim=1), dim=1).flatten(1).sum(1)


def assert_matches(got, ref, exact, atol):
    """got is within atol of the float32 reference, or no further from float64 than it is.

    Bins of small mass lose digits to sigmoid(a) - sigmoid(b) in float32, so the kernel and
    the reference can differ by more than a fixed tolerance while both carry the same error.
    """
    got, ref, exact = got.double(), ref.double(), exact.double()
    ok = ((got - ref).abs() <= atol) | ((got - exact).abs() <= 2 * (ref - exact).abs() + atol)
    assert ok.all(), f"{(~ok).sum().item()} mismatches, worst |got - ref| = {(got - ref).abs().max().item():.3g}"


def check_against_reference(x, params):
    grad_out = torch.linspace(-1.5, 2.0, x.shape[0], device=x.device)
    ref, ref_grad = forward_and_grad(discretized_logistic_mixture_log_prob_reference, x, params, grad_out)
    got, got_grad = forward_and_grad(dlogmix.dlogmix_log_prob_triton, x, params, grad_out)
    exact, exact_grad = forward_and_grad(reference_float64, x, params.double(), grad_out.double())
    rtol, atol, gtol = TOL[params.dtype]
    assert got.dtype == torch.float32 and got.shape == (x.shape[0],)
    assert got_grad.dtype == params.dtype and got_grad.shape == params.shape
    assert_matches(got, ref, exact, atol + rtol * ref.abs())
    scale = ref_grad.float().abs().max().item() + 1e-6
    if params.dtype == torch.float32:
        assert_matches(got_grad, ref_grad, exact_grad, gtol * scale)
    else:  # both round the float32 gradient to params' dtype: compare to the reference only
        torch.testing.assert_close(got_grad.float(), ref_grad.float(), rtol=0, atol=gtol * scale)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 2),
    c=st.sampled_from([1, 3]),
    m=st.sampled_from([1, 10]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    regime=st.sampled_from(["random", "edges", "clamp", "tiny"]),
)
def test_dlogmix_matches_reference(seed, n, c, m, h, w, regime):
    check_against_reference(*make_inputs(seed, n, c, m, h, w, regime))


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    c=st.sampled_from([1, 3]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    regime=st.sampled_from(["random", "edges", "clamp"]),
)
def test_dlogmix_half_precision_params(seed, c, dtype, regime):
    check_against_reference(*make_inputs(seed, 1, c, 3, 3, 5, regime, dtype))


@pytest.mark.parametrize("c", [1, 3])
def test_dlogmix_regimes_are_exercised(c):
    """The regimes really hit the edge bins, the -7 clamp and the tiny-bin branch."""
    x, params = make_inputs(0, 2, c, 10, 5, 5, "clamp")
    assert (x == 0).any() and (x == 1).any()
    _, _, log_scales, _ = split_dlogmix_params(params, c)
    assert (log_scales == -7).any() and (log_scales < -7).any()
    for regime in ("clamp", "tiny"):
        x, params = make_inputs(1, 1, 1, 10, 5, 5, regime)
        xs = (2 * x - 1).cpu()
        _, means, ls, _ = split_dlogmix_params(params.cpu(), 1)
        means, ls = means[:, 0], ls[:, 0].clamp(min=-7)
        inv = torch.exp(-ls)
        delta = torch.sigmoid(inv * (xs - means + 1 / 255)) - torch.sigmoid(inv * (xs - means - 1 / 255))
        interior = (xs > -0.999) & (xs < 0.999)
        assert (interior & (delta <= 1e-5)).any()
        check_against_reference(x, params)


def test_dlogmix_tiny_bin_value():
    """A single interior pixel whose bin mass underflows scores the density at the bin centre."""
    x = torch.full((1, 1, 1, 1), 128 / 255, device=DEVICE)
    params = torch.tensor([0.0, -0.9, -3.0], device=DEVICE).view(1, 3, 1, 1)
    xs = 2 * x.cpu().flatten() - 1
    mid = math.exp(3.0) * (xs.item() + 0.9)
    expected = mid + 3.0 - 2 * torch.nn.functional.softplus(torch.tensor(mid)).item() - math.log(127.5)
    assert discretized_logistic_log_prob_per_component(
        xs, torch.tensor([-0.9]), torch.tensor([-3.0])
    ).item() == pytest.approx(expected, abs=1e-4)
    assert dlogmix.dlogmix_log_prob_triton(x, params).item() == pytest.approx(expected, abs=1e-4)


def test_dlogmix_is_deterministic():
    x, params = make_inputs(3, 2, 3, 10, 5, 3, "random")
    assert torch.equal(dlogmix.dlogmix_log_prob_triton(x, params), dlogmix.dlogmix_log_prob_triton(x, params))


def test_dlogmix_multiple_blocks_per_image():
    """Images larger than one block: partial sums per block, then a fixed reduction."""
    x, params = make_inputs(4, 1, 1, 1, 17, 19, "random")
    assert dlogmix._block_size(17 * 19) < 17 * 19
    check_against_reference(x, params)


def test_dlogmix_no_grad_for_x_and_empty_batch():
    x, params = make_inputs(5, 1, 1, 1, 2, 3, "random")
    x = x.clone().requires_grad_(True)
    p = params.clone().requires_grad_(True)
    dlogmix.dlogmix_log_prob_triton(x, p).sum().backward()
    assert x.grad is None and p.grad is not None
    empty = dlogmix.dlogmix_log_prob_triton(x[:0].detach(), params[:0])
    assert empty.shape == (0,)


# ---------------------------------------------------------------- logmeanexp and streaming


def log_weights(seed, s, n, p_neg_inf, all_inf_cols):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(s, n, generator=g) * 30 - 500
    w[torch.rand(s, n, generator=g) < p_neg_inf] = -math.inf
    w[:, :all_inf_cols] = -math.inf
    return w.to(DEVICE)


def assert_same_with_inf(got, ref):
    assert torch.equal(torch.isneginf(got), torch.isneginf(ref))
    finite = torch.isfinite(ref)
    assert torch.isfinite(got[finite]).all()
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-5, atol=1e-4)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    s=st.integers(1, 70),
    n=st.integers(1, 300),
    p_neg_inf=st.sampled_from([0.0, 0.5, 0.95]),
    all_inf_cols=st.integers(0, 2),
)
def test_logmeanexp_matches_torch(seed, s, n, p_neg_inf, all_inf_cols):
    w = log_weights(seed, s, n, p_neg_inf, min(all_inf_cols, n))
    assert_same_with_inf(lse.logmeanexp_triton(w), torch.logsumexp(w, dim=0) - math.log(s))


def test_logmeanexp_all_neg_inf_and_gradient():
    w = torch.full((5, 3), -math.inf, device=DEVICE)
    w[2, 1] = -3.0
    out = lse.logmeanexp_triton(w)
    assert torch.isneginf(out[0]) and torch.isneginf(out[2])
    assert out[1].item() == pytest.approx(-3.0 - math.log(5))
    v = torch.randn(7, 4, device=DEVICE, requires_grad=True)
    lse.logmeanexp_triton(v).sum().backward()
    torch.testing.assert_close(v.grad, torch.softmax(v.detach(), dim=0))


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    chunks=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    p_neg_inf=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_streaming_matches_one_shot(seed, n, chunks, p_neg_inf):
    s = sum(chunks)
    w = log_weights(seed, s, n, p_neg_inf, min(1, n))
    run_max = torch.full((n,), -math.inf, device=DEVICE)
    run_sum = torch.zeros(n, device=DEVICE)
    ref_max, ref_sum = run_max.clone(), run_sum.clone()
    for chunk in w.split(chunks):
        run_max, run_sum = lse.streaming_update_triton(run_max, run_sum, chunk)
        ref_max, ref_sum = streaming_update_reference(ref_max, ref_sum, chunk)
        assert torch.equal(run_max, ref_max)  # max is exact, -inf included
        torch.testing.assert_close(run_sum, ref_sum, rtol=1e-5, atol=0)
    assert_same_with_inf(run_max + torch.log(run_sum) - math.log(s), torch.logsumexp(w, dim=0) - math.log(s))
    empty = lse.streaming_update_triton(run_max, run_sum, w[:0])  # an empty chunk leaves the state as it is
    assert torch.equal(empty[0], run_max) and torch.equal(empty[1], run_sum)


def test_public_streaming_and_logmeanexp_use_kernels(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    calls = []
    real = lse.streaming_update_triton
    monkeypatch.setattr(lse, "streaming_update_triton", lambda *a: calls.append(1) or real(*a))
    w = log_weights(7, 50, 9, 0.3, 1)
    acc = StreamingLogMeanExp()
    for chunk in w.split(16):
        acc.update(chunk)
    assert len(calls) == 4
    expected = torch.logsumexp(w, dim=0) - math.log(50)
    assert_same_with_inf(acc.result(), expected)
    assert_same_with_inf(logmeanexp(w), expected)


# ---------------------------------------------------------------- dispatch


def test_dispatch_env_var(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert not dispatch.use_triton(cpu)
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    assert not dispatch.use_triton(cpu)  # auto never sends CPU tensors to the interpreter
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    assert dispatch.use_triton(cpu)
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="HVAE_DETECT_KERNELS"):
        dispatch.use_triton(cpu)


def test_forcing_triton_where_it_cannot_run_is_an_error(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        dispatch.use_triton(cpu)
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="not installed"):
        dispatch.use_triton(cpu)


def test_public_dlogmix_follows_dispatch(monkeypatch):
    x, params = make_inputs(8, 1, 3, 2, 3, 3, "random")
    calls = []
    real = dlogmix.dlogmix_log_prob_triton
    monkeypatch.setattr(dlogmix, "dlogmix_log_prob_triton", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    ref = discretized_logistic_mixture_log_prob(x, params)
    assert not calls
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    got = discretized_logistic_mixture_log_prob(x, params)
    assert calls
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3)


def test_importing_the_package_does_not_import_triton():
    code = (
        "import sys, importlib.util\n"
        "import hvae_detect, hvae_detect.cli, hvae_detect.kernels.dispatch\n"
        "assert 'triton' not in sys.modules, 'triton imported eagerly'\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "assert spec is None or not str(spec.origin).startswith(%r), spec\n"
    ) % os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.expanduser("~"), env=env)


# ---------------------------------------------------------------- the one input check


def _zeros(*shape, dtype=torch.float32, device=None):
    return torch.zeros(shape, dtype=dtype, device=device or DEVICE)


BAD_INPUTS = [  # (entry point, arguments, what the message must say)
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2), _zeros(1, 4, 2, 2)), "3*M parameter channels"),
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2), _zeros(1, 0, 2, 2)), "M >= 1"),
    ("dlogmix", lambda: (_zeros(1, 2, 2, 2), _zeros(1, 6, 2, 2)), "1 or 3 channels"),
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2), _zeros(2, 3, 2, 2)), "do not match x"),
    ("dlogmix", lambda: (_zeros(1, 1, 4), _zeros(1, 3, 4)), "(N, C, H, W)"),
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2, dtype=torch.uint8), _zeros(1, 3, 2, 2)), "x must be float16"),
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2), _zeros(1, 3, 2, 2, dtype=torch.int64)), "got torch.int64"),
    ("dlogmix", lambda: (_zeros(1, 1, 2, 2), _zeros(1, 3, 2, 2, device="meta")), "one device"),
    (
        "dlogmix",
        lambda: (
            (_zeros(1, 1, 2, 2).numpy(), _zeros(1, 3, 2, 2))
            if DEVICE == "cpu"
            else (_zeros(1, 1, 2, 2).tolist(), _zeros(1, 3, 2, 2))
        ),
        "x must be a torch.Tensor",
    ),
    ("logmeanexp", lambda: (_zeros(0, 3),), "zero samples"),
    ("logmeanexp", lambda: (_zeros(4, 3, dtype=torch.int32),), "log_w must be"),
    ("logmeanexp", lambda: (_zeros(4, 3), 2), "out of range"),
    ("streaming", lambda: (_zeros(3), _zeros(3), _zeros(2, 4)), "states (N,)"),
    ("streaming", lambda: (_zeros(3), _zeros(3), _zeros(3)), "chunk (s, N)"),
    ("streaming", lambda: (_zeros(3), _zeros(3, dtype=torch.float64), _zeros(2, 3)), "one dtype"),
    ("streaming", lambda: (_zeros(3), _zeros(3), _zeros(2, 3, dtype=torch.bool)), "chunk must be"),
]
ENTRY_POINTS = {
    "dlogmix": dispatch.dlogmix_log_prob,
    "logmeanexp": dispatch.logmeanexp,
    "streaming": dispatch.streaming_update,
}


@pytest.mark.parametrize(
    "entry, make, expected", BAD_INPUTS, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_INPUTS)]
)
def test_bad_inputs_get_one_error_whichever_path_runs(monkeypatch, entry, make, expected):
    """dispatch.py checks every input once, before choosing: the same one-line ValueError on either
    path, and neither the kernel nor the reference is reached."""
    reached = []
    for module, name in (
        (dlogmix, "dlogmix_log_prob_triton"),
        (lse, "logmeanexp_triton"),
        (lse, "streaming_update_triton"),
        (dispatch, "dlogmix_log_prob_reference"),
        (dispatch, "logmeanexp_reference"),
        (dispatch, "streaming_update_reference"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: reached.append(_name))
    messages = {}
    for mode in ("reference", "triton", "auto"):
        monkeypatch.setenv(dispatch.ENV_VAR, mode)
        with pytest.raises(ValueError, match=re.escape(expected)) as err:
            ENTRY_POINTS[entry](*make())
        messages[mode] = str(err.value)
    assert len(set(messages.values())) == 1 and "\n" not in messages["reference"], messages
    assert not reached


def test_good_inputs_pass_the_check_on_every_path(monkeypatch):
    """The check lets through what both paths compute: 1 and 3 channels, every float dtype, empty batches."""
    for c, dtype, n in ((1, torch.float32, 2), (3, torch.bfloat16, 1), (3, torch.float64, 0)):
        x, params = make_inputs(9, max(n, 1), c, 2, 2, 3, "random", dtype)
        x, params = x[:n].to(dtype), params[:n]
        outs = []
        for mode in ("reference", "triton"):
            monkeypatch.setenv(dispatch.ENV_VAR, mode)
            outs.append(dispatch.dlogmix_log_prob(x, params))
        assert outs[0].shape == outs[1].shape == (n,)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=5e-3)
