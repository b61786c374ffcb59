"""What LLR>k is made of, per set: the reconstruction gain and the KL that inferring z_1..z_k adds.

    python benchmarks/paper/llr_terms.py --model RUN_OR_MODEL_DIR --in_dist CIFAR10Dequantized --ood SVHNDequantized

With one posterior sample per image (drawn from a fixed generator),

    LLR>k = L - L>k = [log p(x | z) - log p(x | z_{<=k} from the prior)] - [KL_1 + ... + KL_k]
                    =            reconstruction gain                    -     KL removed

(the KL terms of z_{>k} differ slightly between the two passes; they are in the KL-removed column).
For each k it prints the mean of both terms per set, the AUROC (in-distribution test images against
the OOD set's) of LLR>k and of each term alone, and the correlation of LLR>k with the images'
compressed size (zlib, level 9, of the uint8 pixels), a proxy of the input complexity that the
plain likelihood is known to follow.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from hvae_detect.data.datasets import load_dataset
from hvae_detect.persistence.checkpoints import read_model_dir, resolve_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from paper.ood_table import default_data_root  # noqa: E402


def compressed_bytes(x: torch.Tensor) -> np.ndarray:
    """zlib-compressed size of each image's uint8 pixels, (N,)."""
    pixels = (x.cpu().numpy() * 255).round().astype(np.uint8)
    return np.array([len(zlib.compress(image.tobytes(), 9)) for image in pixels])


@torch.no_grad()
def bound_terms(model, x, seed: int = 0) -> dict:
    """{k: (log p(x | z), summed KL)} for k = 0..L-1, one posterior sample each, (N,) arrays."""
    out = {}
    for k in range(model.n_latents):
        terms = model(x, k, generator=torch.Generator(device=x.device).manual_seed(seed))
        out[k] = (terms.log_px.cpu().numpy(), terms.kl.sum(0).cpu().numpy())
    return out


def main(argv=None) -> int:
    p = harness.parser(__doc__, threads=1)
    p.add_argument("--model", required=True, help="a run folder of hvae-detect train or a saved model folder")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--in_dist", default="CIFAR10Dequantized")
    p.add_argument("--ood", default="SVHNDequantized")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=1000, help="images per set (the first n of the split)")
    p.add_argument("--data_root", default=None, help="folder with the .npz files (default ../shared/data)")
    args = p.parse_args(argv)
    harness.set_threads(args.threads)
    print(harness.header())
    model, _ = read_model_dir(resolve_model_dir(args.model, args.checkpoint))
    model.eval()
    root = Path(args.data_root) if args.data_root else default_data_root()
    sets = {}
    for name in (args.in_dist, args.ood):
        data = load_dataset(name, {"split": args.split}, root, download=False, max_examples=args.n)
        x = data.fixed()
        sets[name] = (bound_terms(model, x), compressed_bytes(x), data.label)
        print(f"{data.label}: {x.shape[0]} images, mean compressed size {sets[name][1].mean():.0f} bytes")
    y = np.r_[np.zeros(len(sets[args.in_dist][1])), np.ones(len(sets[args.ood][1]))]

    def auroc(a, b):  # higher = more OOD
        return roc_auc_score(y, np.r_[a, b])

    elbo = {name: t[0][0] - t[0][1] for name, (t, _, _) in sets.items()}
    print(f"AUROC of -L: {auroc(-elbo[args.in_dist], -elbo[args.ood]):.3f}")
    print("| k | set | reconstruction gain | KL removed | LLR>k | corr(LLR>k, compressed size) |")
    print("|---|---|---|---|---|---|")
    for k in range(1, model.n_latents):
        parts = {}
        for name, (t, size, label) in sets.items():
            gain = t[0][0] - t[k][0]
            kl_removed = t[0][1] - t[k][1]
            llr = gain - kl_removed
            parts[name] = (gain, kl_removed, llr)
            print(
                f"| {k} | {label} | {gain.mean():.0f} | {kl_removed.mean():.0f} | {llr.mean():.0f} | "
                f"{np.corrcoef(llr, size)[0, 1]:.2f} |"
            )
        a, b = parts[args.in_dist], parts[args.ood]
        print(
            f"| {k} | AUROC | {auroc(a[0], b[0]):.3f} | {auroc(-a[1], -b[1]):.3f} (of -KL) | "
            f"{auroc(a[2], b[2]):.3f} | |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
