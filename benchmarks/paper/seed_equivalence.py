"""How close is ``hvae-detect train``'s model to the paper's? A measured check against a local
copy of the paper's code (github JakobHavtorn/hvae-oodd; not part of this repository, not run in CI).

    python benchmarks/paper/seed_equivalence.py --paper_code PATH [--data_root DIR] [--batch 32] [--n_score 32]
    HVAE_OODD_PATH=PATH python benchmarks/paper/seed_equivalence.py

Without the paper's code it prints why and exits with status 0. With it, it builds the paper's VAE
and this package's VAE from the seed's Fashion-MNIST configuration (the "paper-mnist"
preset; ReLU, the paper's likelihood head, Bernoulli), initialises the paper's model as the paper
does (lazily, data-dependent, on the first batch of binarised Fashion-MNIST), copies every weight-
normalised layer (g, v, bias) into the layer of ours that plays the same role and has the same
shapes, and initialises our remaining layers with our data-dependent initialisation on the same
batch. Then it prints:
  1. which parameters were copied and which have no counterpart, on either side;
  2. component checks on the paper's own activations: objective (free nats + KL weight), schedules,
     data-dependent initialisation, each residual block, Gaussian layers, projections, likelihood;
  3. the training loss of one batch (free nats 2, KL weight 1/200: the seed's first epoch) with the
     same posterior noise in both models;
  4. L, L>1, L>2 of Fashion-MNIST and MNIST test images with matched noise, and the scoring
     engine's keyed-noise L against the matched-noise L (a statistical comparison).
Sections 3 and 4 are repeated for two more versions of ours: the copied directions v with g and b
from our own data-dependent initialisation (copied g and b normalise the paper's activations, not
ours), and that with skip_stochastic=False (the paper's effective inference wiring). All numbers
are at initialisation: the models are not trained.
The paper's code is imported from PATH, never copied; if ``seaborn`` (imported only by its plotting
module) is missing, an empty stand-in module is installed for the import and the report says so.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types
import warnings
from pathlib import Path

import torch

from hvae_detect.data.datasets import DATA_ROOT_ENV, DatasetNotFound, load_dataset
from hvae_detect.models.architectures import PRESETS
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.layers import data_dependent_init, weight_normed_layers
from hvae_detect.models.vae import VAE
from hvae_detect.scoring.engine import importance_bounds
from hvae_detect.training.config import SEED_TRAINING
from hvae_detect.training.loop import elbo_loss, free_nats_at, free_nats_kl, kl_weight_at, training_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

PAPER_ENV = "HVAE_OODD_PATH"
TOL = 1e-4  # "same up to float rounding": max |a - b| <= TOL * (1 + max |b|)


def find_paper_code(arg: str | None, script: str = "seed_equivalence") -> Path | None:
    """The paper's repository root (holding oodd/models/dvae.py), from --paper_code or $HVAE_OODD_PATH;
    None, after saying that ``script`` skips, when neither is given."""
    value = arg or os.environ.get(PAPER_ENV)
    if not value:
        print(
            f"{script}: skipped: no copy of the paper's code given (pass --paper_code PATH or set "
            f"{PAPER_ENV}; e.g. git clone https://github.com/JakobHavtorn/hvae-oodd PATH)"
        )
        return None
    root = Path(value).expanduser()
    if not (root / "oodd" / "models" / "dvae.py").is_file():
        raise SystemExit(f"error: {root} is not a copy of the paper's code (expected oodd/models/dvae.py in it)")
    return root


def import_paper(root: Path):
    notes = []
    sys.path.insert(0, str(root))
    if importlib.util.find_spec("seaborn") is None:  # oodd.utils imports its plotting module at import time
        sys.modules["seaborn"] = types.ModuleType("seaborn")
        notes.append(
            "seaborn is not installed: an empty stand-in module was used for `import seaborn` "
            "(only oodd/utils/plotting.py imports it; nothing here plots)"
        )
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.nn.utils.weight_norm is deprecated
    import oodd.losses
    import oodd.models.dvae
    import oodd.variational

    if not str(Path(oodd.__file__).resolve()).startswith(str(root.resolve())):
        raise SystemExit(f"error: `oodd` was imported from {oodd.__file__}, not from {root}")
    return oodd, notes


def close(a, b) -> tuple[bool, float]:
    diff = (a.double() - b.double()).abs().max().item()
    return diff <= TOL * (1 + b.double().abs().max().item()), diff


def line(name, ok_diff, note=""):
    ok, diff = ok_diff
    shown = "n/a" if math.isnan(diff) else f"{diff:.3g}"
    print(f"  {'same   ' if ok else 'DIFFERS'}  {name:<44} max|diff| {shown}{'  (' + note + ')' if note else ''}")


# ---- parameter correspondence ------------------------------------------------------------------
def _paper_layer(wrapper):
    """The torch layer holding weight_g / weight_v / bias inside a paper wrapper (None: identity)."""
    return None if wrapper is None else getattr(wrapper, "conv", None) or wrapper.linear


def _pair(pairs, p_name, p_wrapper, o_name, o_layer):
    p = _paper_layer(p_wrapper)
    if p is None or o_layer is None:
        return
    o = o_layer.parametrizations.weight
    same = (
        isinstance(o_layer, type(p))
        and p.weight_g.shape == o.original0.shape
        and p.weight_v.shape == o.original1.shape
        and p.bias.shape == o_layer.bias.shape
    )
    if same:
        pairs.append((p_name, p, o_name, o_layer))


def _pair_block(pairs, p_name, pb, o_name, ob):
    # The resizing convolution is the paper's conv2 and our conv1: pair by role, not by name.
    if pb.stride != 1:
        cands = [("conv2", "conv1"), ("conv1", "conv2")]
    else:
        cands = [("conv1", "conv1"), ("conv2", "conv2")]
    for pc, oc in cands:
        _pair(pairs, f"{p_name}.{pc}", getattr(pb, pc), f"{o_name}.{oc}", getattr(ob, oc))


def correspondence(paper, ours):
    """(paper name, paper layer, our name, our layer) for every pair of layers with the same role and shapes."""
    pairs = []
    n = ours.n_latents
    for i in range(n):
        ps = paper.stages[i]
        for j, (pb, ob) in enumerate(zip(ps.q_deterministic.layers, ours.q_det[i])):
            _pair_block(pairs, f"stages.{i}.q_deterministic.layers.{j}", pb, f"q_det.{i}.{j}", ob)
        sto, our_q = ps.stochastic, ours.q_z[i]
        _pair(
            pairs,
            f"stages.{i}.stochastic.in_transform_q",
            sto.in_transform_q,
            f"q_z.{i}",
            getattr(our_q, "conv", None) or our_q.fc,
        )
        if i < n - 1:
            our_p = ours.p_z[i]
            _pair(
                pairs,
                f"stages.{i}.stochastic.in_transform_p",
                sto.in_transform_p,
                f"p_z.{i}",
                getattr(our_p, "conv", None) or our_p.fc,
            )
            _pair(pairs, f"stages.{i}.q_projection", ps.q_projection.transform, f"q_skip.{i}", ours.q_skip[i].map)
        _pair(pairs, f"stages.{i}.p_projection", ps.p_projection.transform, f"p_proj.{i}", ours.p_proj[i].map)
        for j, (pb, ob) in enumerate(zip(ps.p_deterministic.layers, ours.p_det[i])):
            _pair_block(pairs, f"stages.{i}.p_deterministic.layers.{j}", pb, f"p_det.{i}.{j}", ob)
    _pair(pairs, "likelihood.parameter_net", paper.likelihood.parameter_net, "head", ours.head)
    return pairs


@torch.no_grad()
def copy_weights(pairs):
    for _, p, _, o in pairs:
        w = o.parametrizations.weight
        w.original0.copy_(p.weight_g)
        w.original1.copy_(p.weight_v)
        o.bias.copy_(p.bias)


# ---- the runs ----------------------------------------------------------------------------------
def paper_bound(oodd, paper, x, k, seed, free_nats=0.0, beta=1.0):
    """The paper's per-image (loss, elbo, likelihood, kl elements) of L>k (k = 0: L), as ood-llr / dvae_run."""
    mask = [True] * k + [False] * (paper.n_latents - k)
    torch.manual_seed(seed)
    lik, stage_datas = paper(x, decode_from_p=mask, use_mode=mask)
    kls = [sd.loss.kl_elementwise for sd in stage_datas if sd.loss.kl_elementwise is not None]
    loss, elbo, _, _ = oodd.losses.ELBO()(
        lik.likelihood, kls, samples=1, free_nats=free_nats, beta=beta, sample_reduction=None, batch_reduction=None
    )
    return loss, elbo, lik.likelihood, kls, stage_datas


def our_noise(model, n, k, seed):
    """The standard-normal draws the paper's forward makes after torch.manual_seed(seed): z_{k+1..L} in order."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((n, *model.latent_shapes[i]), generator=g) for i in range(k, model.n_latents)]


def rank_corr(a, b):
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


def check_components(oodd, paper, ours, x, captured, seed):
    print("\n== 2. components, on the paper's activations of the batch (copied weights)")
    # Objective: the paper's ELBO + FreeNats(fn, 1) against free_nats_kl + elbo_loss on the same tensors.
    loss, elbo, lik, kls, _ = paper_bound(oodd, paper, x, 0, seed, free_nats=2.0, beta=0.005)
    ours_loss = elbo_loss(lik, free_nats_kl(kls, 2.0), 0.005)
    line("loss = -log p + beta * floored KL (fn 2, beta 0.005)", close(ours_loss, loss))
    line("elbo = log p - KL", close(lik - sum(k.flatten(1).sum(1) for k in kls), elbo))
    # Schedules over the seed's run, at every step (469 steps of 128 per epoch on 60,000 images).
    warm = oodd.variational.DeterministicWarmup(n=SEED_TRAINING.warmup_epochs)
    cool = oodd.variational.FreeNatsCooldown(
        int(SEED_TRAINING.free_nats_epochs) // 2, int(SEED_TRAINING.free_nats_epochs) // 2, SEED_TRAINING.free_nats, 0
    )
    steps, db, df = math.ceil(60000 / 128), 0.0, 0.0
    for epoch in range(SEED_TRAINING.epochs):
        beta, fn = next(warm), float(next(cool))
        for s in range(steps):
            t = epoch + s / steps
            db = max(db, abs(kl_weight_at(t, SEED_TRAINING.warmup_epochs) - beta))
            df = max(df, abs(free_nats_at(t, SEED_TRAINING.free_nats, SEED_TRAINING.free_nats_epochs) - fn))
    print(
        f"  DIFFERS  schedules over the seed's 1000 epochs x {steps} steps        max|beta diff| {db:.3g}, "
        f"max|free nats diff| {df:.3g} (per-epoch constants there, per step here)"
    )
    # Data-dependent initialisation: one conv and one dense layer, same Kaiming draw, same input.
    from oodd.layers.convolutions import NormedSameConv2d
    from oodd.layers.linear import NormedDense
    from torch.nn.utils.parametrizations import weight_norm

    feats = torch.randn(x.shape[0], 3136, generator=torch.Generator().manual_seed(seed))
    for name, make_p, make_o, inp in (
        (
            "data-dependent init, 5x5 conv 1->64",
            lambda: NormedSameConv2d((1, 28, 28), 64, 5),
            lambda: weight_norm(torch.nn.Conv2d(1, 64, 5, padding=2)),
            x,
        ),
        (
            "data-dependent init, dense 3136->32",
            lambda: NormedDense((3136,), 32),
            lambda: weight_norm(torch.nn.Linear(3136, 32)),
            feats,
        ),
    ):
        p, o = make_p(), make_o()
        torch.manual_seed(seed)
        with torch.no_grad():
            p(inp)
        torch.manual_seed(seed)
        data_dependent_init([o], lambda: o(inp))
        pl, w = _paper_layer(p), o.parametrizations.weight
        line(
            name + " (g, v, b)",
            close(
                torch.cat([w.original0.flatten(), w.original1.flatten(), o.bias]),
                torch.cat([pl.weight_g.flatten(), pl.weight_v.flatten(), pl.bias]),
            ),
        )
    # Residual blocks on the paper's inputs.
    for i in range(ours.n_latents):
        for path, p_blocks, o_blocks in (
            ("q", paper.stages[i].q_deterministic.layers, ours.q_det[i]),
            ("p", paper.stages[i].p_deterministic.layers, ours.p_det[i]),
        ):
            for j, (pb, ob) in enumerate(zip(p_blocks, o_blocks)):
                xin, aux, out = captured[id(pb)]
                notes = []
                if pb.stride != 1:
                    notes.append("resizes: paper conv2 strided/transposed, TF padding, avg-pool shortcut")
                if not pb.residual:
                    notes.append("paper: no pre-activation, no shortcut")
                if pb.aux_op is not None:
                    notes.append("paper: adds aux_op(stage above)")
                if not isinstance(ob.shortcut, torch.nn.Identity):
                    notes.append("ours: 1x1 conv shortcut")
                if ob.conv1.in_channels != pb.conv1.conv.in_channels:
                    notes.append("different input")
                    line(f"{path}_det.{i}.{j}", (False, math.nan), "; ".join(notes))
                    continue
                with torch.no_grad():
                    line(f"{path}_det.{i}.{j}", close(ob(xin), out), "; ".join(notes))
    # Gaussian layers, projections and the likelihood on the paper's inputs.
    with torch.no_grad():
        for i in range(ours.n_latents):
            sto = paper.stages[i].stochastic
            h = captured[id(paper.stages[i].q_deterministic)]
            mu, sigma = sto.compute_params(h, True)
            q = ours.q_z[i](h)
            line(f"q_z.{i} mean", close(q.mean, mu))
            line(
                f"q_z.{i} std", close(q.std, sigma.clamp(min=1e-6)), "paper: softplus(beta=ln 2), ours: softplus + 1e-3"
            )
            if i < ours.n_latents - 1:
                d = captured[id(paper.stages[i + 1].p_deterministic)]
                mu, sigma = sto.compute_params(d, False)
                line(f"p_z.{i} mean", close(ours.p_z[i](d).mean, mu))
            z = torch.randn((x.shape[0], *ours.latent_shapes[i]), generator=torch.Generator().manual_seed(i))
            if i < ours.n_latents - 1 and paper.stages[i].q_projection.transform is not None:
                line(f"q_skip.{i} (dense)", close(ours.q_skip[i](z), paper.stages[i].q_projection(z)))
            if paper.stages[i].p_projection.transform is not None:
                line(f"p_proj.{i} (dense)", close(ours.p_proj[i](z), paper.stages[i].p_projection(z)))
            else:
                print(f"  DIFFERS  p_proj.{i}, q_skip.{i}: paper identity (conv latent), ours 1x1 conv")
        g = captured[id(paper.stages[0].p_deterministic)]
        params = ours.head(ours.act(g) if ours.head_activation else g)
        line(
            "likelihood log p(x | decoder output)",
            close(ours.observation.log_prob(x, params), paper.likelihood(g, x)[0]),
        )


def capture(paper):
    """Forward hooks recording the paper's block inputs/outputs and stage outputs during one forward."""
    captured, handles = {}, []
    for stage in paper.stages:
        for block in list(stage.q_deterministic.layers) + list(stage.p_deterministic.layers):
            handles.append(
                block.register_forward_hook(
                    lambda m, a, out: captured.__setitem__(id(m), (a[0], a[1] if len(a) > 1 else None, out))
                )
            )
        for stack in (stage.q_deterministic, stage.p_deterministic):
            handles.append(stack.register_forward_hook(lambda m, a, out: captured.__setitem__(id(m), out[0])))
    return captured, handles


def main(argv=None) -> int:
    ap = harness.parser(__doc__, seed=1)
    ap.add_argument("--paper_code", help=f"root of a local copy of the paper's code (default ${PAPER_ENV})")
    ap.add_argument(
        "--data_root",
        default=None,
        help=f"folder with fashion_mnist.npz, mnist.npz (default ${DATA_ROOT_ENV} or ./data)",
    )
    ap.add_argument("--batch", type=int, default=32, help="training batch (the data-dependent init and the loss)")
    ap.add_argument("--n_score", type=int, default=32, help="images scored per set")
    args = ap.parse_args(argv)
    root = find_paper_code(args.paper_code)
    if root is None:
        return 0
    oodd, notes = import_paper(root)
    print(harness.header())
    for note in notes:
        print("note:", note)
    try:
        x = load_dataset(
            "FashionMNISTBinarized", {"split": "train", "dynamic": False}, args.data_root, False, args.batch, args.seed
        ).fixed()
        sets = {
            name: load_dataset(
                f"{name}Binarized",
                {"split": "validation", "dynamic": False},
                args.data_root,
                False,
                args.n_score,
                args.seed,
            ).fixed()
            for name in ("FashionMNIST", "MNIST")
        }
    except DatasetNotFound as e:
        raise SystemExit(f"error: {e}") from None
    arch, seed = PRESETS["paper-mnist"], args.seed
    torch.manual_seed(seed)
    paper = oodd.models.dvae.VAE(
        input_shape=(1, 28, 28),
        likelihood_module="BernoulliLikelihoodConv2d",
        config_deterministic=arch["config_deterministic"],
        config_stochastic=arch["config_stochastic"],
        activation="ReLU",
        q_dropout=0.0,
        p_dropout=0.0,
        skip_stochastic=True,
        padded_shape=None,
    ).eval()
    with torch.no_grad():  # the paper's lazy data-dependent init: the first forward of the first batch
        paper_bound(oodd, paper, x, 0, seed + 1)
    print(
        f"paper's code: {root}; seed's Fashion-MNIST configuration, ReLU, Bernoulli; batch {x.shape[0]}, "
        f"{args.n_score} images per scored set"
    )
    variants = (
        (True, False, "hvae-detect train's default wiring; copied g, v, b"),
        (True, True, "same wiring; copied directions v, g and b re-initialised on our own activations"),
        (False, True, "the paper's effective inference wiring (no skips); copied v, own g and b"),
    )
    for skip, renormalise, what in variants:
        torch.manual_seed(seed)
        ours = VAE(
            ModelConfig(
                (1, 28, 28), arch, "bernoulli", activation="ReLU", likelihood_head="paper", skip_stochastic=skip
            )
        ).eval()
        pairs = correspondence(paper, ours)
        copy_weights(pairs)
        copied = [o for *_, o in pairs]
        rest = [m for m in weight_normed_layers(ours) if all(m is not o for o in copied)]
        init_layers(
            ours, x, rest if not renormalise else weight_normed_layers(ours), copied if renormalise else [], seed + 1
        )
        print(f"\n######## ours: skip_stochastic={skip}; {what}")
        if not renormalise:
            report_params(paper, ours, pairs)
            captured, handles = capture(paper)
            with torch.no_grad():
                paper_bound(oodd, paper, x, 0, seed + 2)
            for h in handles:
                h.remove()
            check_components(oodd, paper, ours, x, captured, seed + 2)
        compare_loss(oodd, paper, ours, x, seed + 3)
        compare_scores(oodd, paper, ours, sets, seed + 4)
    return 0


def init_layers(ours, x, layers, keep_direction, seed):
    """Our data-dependent initialisation of ``layers`` on x; those in ``keep_direction`` keep their (copied)
    direction v instead of a fresh Kaiming draw, so only their g and b are set from our own activations."""
    saved = {id(m): m.parametrizations.weight.original1.detach().clone() for m in keep_direction}
    restored = set()

    def restore(module, args):  # runs after data_dependent_init's own pre-hook has drawn a new v
        if id(module) in saved and id(module) not in restored:
            restored.add(id(module))
            with torch.no_grad():
                module.parametrizations.weight.original1.copy_(saved[id(module)])

    def run():
        handles = [m.register_forward_pre_hook(restore) for m in keep_direction]
        try:
            ours(x, 0, generator=torch.Generator().manual_seed(seed))
        finally:
            for h in handles:
                h.remove()

    data_dependent_init(layers, run)


def report_params(paper, ours, pairs):
    print("\n== 1. parameters")
    n_copied = sum(o.bias.numel() + o.parametrizations.weight.original1.numel() for *_, o in pairs)
    print(f"  copied (g, v, bias): {len(pairs)} layers, {n_copied} weights")
    for p_name, _, o_name, _ in pairs:
        print(f"    {p_name:<48} -> {o_name}")
    copied_p = {id(p) for _, p, _, _ in pairs}
    paper_left = [n for n, m in paper.named_modules() if hasattr(m, "weight_g") and id(m) not in copied_p]
    copied_o = {id(o) for *_, o in pairs}
    ours_left = [n for n, m in ours.named_modules() if m in weight_normed_layers(ours) and id(m) not in copied_o]
    print(f"  paper layers without a counterpart ({len(paper_left)}): " + ", ".join(paper_left))
    print(
        f"  our layers without a counterpart ({len(ours_left)}; data-dependent init on the batch): "
        + ", ".join(ours_left)
    )


@torch.no_grad()
def compare_loss(oodd, paper, ours, x, seed):
    fn, beta = 2.0, 1 / SEED_TRAINING.warmup_epochs  # the seed's first epoch
    print(f"\n== 3. training loss of one batch (free nats {fn} per element group, KL weight {beta}), matched noise")
    loss, elbo, lik, kls, sds = paper_bound(oodd, paper, x, 0, seed, free_nats=fn, beta=beta)
    noise = our_noise(ours, x.shape[0], 0, seed)
    eps = [(sd.q.z - sd.q.mean) / sd.q.dist.scale for sd in sds]
    terms = ours(x, 0, noise=noise, kl_elements=True)
    elements = terms.kl_elements
    o_loss = elbo_loss(terms.log_px, free_nats_kl(elements, fn), beta)
    t_loss, _, _ = training_loss(ours, x, beta, fn, torch.Generator().manual_seed(seed), "element")
    eps_diff = max((a - b).abs().max().item() for a, b in zip(eps, noise))
    print(
        f"  noise: the paper's rsample draws vs ours, max|diff| {eps_diff:.3g}; training_loss with the same "
        f"generator vs the matched-noise loss: {abs(t_loss.item() - o_loss.mean().item()):.3g}"
    )
    rows = [("loss (batch mean)", loss.mean(), o_loss.mean()), ("log p(x|z)", lik.mean(), terms.log_px.mean())]
    for i, (pk, ok) in enumerate(zip(kls, elements)):
        rows.append((f"KL z{i + 1}", pk.flatten(1).sum(1).mean(), ok.flatten(1).sum(1).mean()))
        rows.append(
            (
                f"floored KL z{i + 1}",
                pk.clamp(min=fn / pk.shape[1]).flatten(1).sum(1).mean(),
                ok.clamp(min=fn / ok.shape[1]).flatten(1).sum(1).mean(),
            )
        )
    rows.append(("ELBO", elbo.mean(), terms.bound.mean()))
    print(f"  {'term (nats per image)':<24}{'paper':>12}{'ours':>12}{'ours - paper':>14}")
    for name, a, b in rows:
        print(f"  {name:<24}{a.item():>12.2f}{b.item():>12.2f}{b.item() - a.item():>14.2f}")


@torch.no_grad()
def compare_scores(oodd, paper, ours, sets, seed):
    print("\n== 4. scores (nats per image): matched noise, then the engine's keyed noise")
    print(
        f"  {'set':<14}{'stat':<7}{'paper mean':>12}{'ours mean':>12}{'mean diff':>12}{'max|diff|':>12}"
        f"{'rank corr':>10}  engine - ours (mean ± s.e.)"
    )
    for name, x in sets.items():
        engine = importance_bounds(ours, x, ks=range(1, ours.n_latents), iw_samples=1, seed=seed)
        paper_l, ours_l = {}, {}
        for k in range(ours.n_latents):
            paper_l[k] = paper_bound(oodd, paper, x, k, seed + k)[1]
            ours_l[k] = ours(x, k, noise=our_noise(ours, x.shape[0], k, seed + k)).bound
        stats = {"L": (paper_l[0], ours_l[0], engine[0])}
        for k in range(1, ours.n_latents):
            stats[f"L>{k}"] = (paper_l[k], ours_l[k], engine[k])
            stats[f"LLR>{k}"] = (paper_l[0] - paper_l[k], ours_l[0] - ours_l[k], engine[0] - engine[k])
        for stat, (p, o, e) in stats.items():
            d = o - p
            se = (e - o).std().item() / math.sqrt(len(o))
            print(
                f"  {name:<14}{stat:<7}{p.mean().item():>12.5g}{o.mean().item():>12.5g}{d.mean().item():>12.5g}"
                f"{d.abs().max().item():>12.5g}{rank_corr(p, o):>10.2f}  {(e - o).mean().item():.4g} ± {se:.2g}"
            )


if __name__ == "__main__":
    sys.exit(main())
