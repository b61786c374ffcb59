"""What the terms of L's passes and the latent path cost: the engine with and without log p(x|z) and
the KLs, and the latent path's one pass (every latent at its posterior mean) beside them.

    python benchmarks/speed/engine_terms.py --archs paper-mnist small --samples 1 16 --repeats 3

``importance_outputs(..., with_terms=True)`` (what ``ood_scores`` and the fused statistic need) against
``with_terms=False`` (the bounds alone, as before the statistics of one model), the same model and batch,
alternating repeat by repeat; images per second, median over repeats, and the ratio; and
``latent_path_outputs`` (what the Path rows need), its seconds as a share of the scoring with terms
(L at S samples and every L>k at S' = 1).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.scoring.engine import importance_outputs, latent_path_outputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402


def main(argv=None):
    ap = harness.parser(__doc__, repeats=3)
    ap.add_argument("--archs", nargs="+", default=["paper-mnist"])
    ap.add_argument("--samples", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--n", type=int, default=256, help="images scored per repeat")
    args = ap.parse_args(argv)
    print(harness.header() + "\n")
    print(
        "| arch | S | bounds only, images/s | with terms, images/s | ratio | latent path, images/s | path time / "
        "scoring time |\n|---|---|---|---|---|---|---|"
    )
    for arch in args.archs:
        torch.manual_seed(0)
        model = make_model(ModelConfig((1, 28, 28), arch, "bernoulli")).eval()
        x = torch.bernoulli(torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
        for s in args.samples:
            runs = {
                False: lambda: importance_outputs(model, x, None, s, 1, seed=0, with_terms=False),
                True: lambda: importance_outputs(model, x, None, s, 1, seed=0, with_terms=True),
                "path": lambda: latent_path_outputs(model, x),
            }
            times = harness.alternate(runs, args.repeats)
            a, b, c = (statistics.median(args.n / t for t in times[key]) for key in (False, True, "path"))
            print(f"| {arch} | {s} | {a:.1f} | {b:.1f} | {b / a:.2f} | {c:.1f} | {b / c:.2f} |", flush=True)


if __name__ == "__main__":
    main()
