"""bfloat16 scoring against float32 on one trained model: the AUROC change and the speed.

    python benchmarks/speed/scoring_precision.py --train 5000 --epochs 2          # ~8 minutes on 2 CPU cores
    python benchmarks/speed/scoring_precision.py --in_dist fashion_mnist --ood mnist --iw_samples 4

Fits ``HVAEOutlierDetector(architecture="small")`` (float32 training, its defaults) on the first
``--train`` training images of ``--in_dist``, then scores ``--n`` test images of it and of ``--ood``
with ``ood_scores`` at ``scoring_precision`` "float32" and "bfloat16" in alternating timed runs (the
same fitted detector: its references, fitted on held-out images in float32 during ``fit``, are kept),
and prints the AUROC (OOD positive) of every statistic at both precisions, their change, and the
images/s of each precision with the ratio. The measure asked for is Fashion-MNIST -> MNIST (a reported
pair: nothing is chosen here; the scoring default stays float32). Data: ../shared/data/*.npz beside
the repository, or $HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import statistics as stats
import sys
import time
from pathlib import Path

from hvae_detect import HVAEOutlierDetector
from hvae_detect.precision import cpu_has_bfloat16
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from harness import images  # noqa: E402

COMPARED = ("float32", "bfloat16")  # scoring_precision values, in this order


def main(argv=None) -> int:
    p = harness.parser(__doc__, repeats=3, seed=0)
    p.add_argument("--in_dist", default="fashion_mnist")
    p.add_argument("--ood", default="mnist")
    p.add_argument("--train", type=int, default=5000, help="training images (the first ones)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n", type=int, default=1000, help="test images per set")
    p.add_argument("--iw_samples", type=int, default=1, help="importance samples S for L")
    args = p.parse_args(argv)
    print(
        f"    {harness.command(__file__, argv)}\n\n{harness.header(f'bfloat16 instructions: {cpu_has_bfloat16()}')}",
        flush=True,
    )
    t0 = time.time()
    det = HVAEOutlierDetector(
        architecture="small", epochs=args.epochs, iw_samples=args.iw_samples, random_state=args.seed
    ).fit(images(args.in_dist, "train", args.train))
    print(f"fit {(time.time() - t0) / 60:.1f} min", flush=True)
    x_in, x_out = images(args.in_dist, "test", args.n), images(args.ood, "test", args.n)
    scores, speed = {}, {name: [] for name in COMPARED}
    for _, precision in harness.alternating(COMPARED, args.repeats):
        det.set_params(scoring_precision=precision)
        scores[precision], took = harness.timed(lambda: (det.ood_scores(x_in), det.ood_scores(x_out)))
        speed[precision].append(2 * args.n / took)
    auroc = {
        precision: {
            key: detection_metrics(statistics.normality(key, inside[key]), statistics.normality(key, outside[key]))[
                "auroc"
            ]
            for key in inside
        }
        for precision, (inside, outside) in scores.items()
    }
    print(
        f"\n{args.in_dist} -> {args.ood}, {args.train} training images, {args.epochs} epochs, S = "
        f"{args.iw_samples}, {args.n} test images per set; load at the end {harness.load()}\n"
    )
    print("| statistic | AUROC float32 | AUROC bfloat16 | change |\n|---|---|---|---|")
    for key in auroc["float32"]:
        a, b = auroc["float32"][key], auroc["bfloat16"][key]
        print(f"| {key} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    f32, bf16 = stats.median(speed["float32"]), stats.median(speed["bfloat16"])
    print(
        f"\nood_scores images/s, {args.repeats} alternating runs: float32 "
        f"{' '.join(f'{v:.1f}' for v in speed['float32'])}; bfloat16 {' '.join(f'{v:.1f}' for v in speed['bfloat16'])}; "
        f"bfloat16 / float32 (medians) {bf16 / f32:.2f}x"
    )
    largest = max(abs(auroc["bfloat16"][k] - auroc["float32"][k]) for k in auroc["float32"])
    print(f"largest AUROC change: {largest:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
