"""Mixed precision against float32 training: does bfloat16 autocast learn the same model?

    python benchmarks/speed/precision_check.py --data_root ../shared/data          # on a CUDA machine
    python benchmarks/speed/precision_check.py --arch small --n_train 2000 --epochs 1   # quick, on CPU

Trains two copies of one model (same initial weights, data order and random numbers) on
dynamically binarised Fashion-MNIST, one in float32 and one with ``precision="bfloat16"``
(``hvae_detect.precision.autocast``), and after every epoch evaluates both in float32 on the
same fixed-binarised test images: mean ELBO (S = 1, same noise) and seconds per epoch.
A usable mixed precision ends within a fraction of a nat of float32 and faster.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from hvae_detect.data.datasets import load_dataset
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.vae import VAE
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import make_optimizer, train_epochs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402


@torch.no_grad()
def mean_elbo(model, x, batch=500):
    model.eval()
    gen = torch.Generator(x.device).manual_seed(0)
    total = 0.0
    for xb in x.split(batch):
        total += model(xb, 0, generator=gen).bound.sum().item()
    return total / x.shape[0]


def main(argv=None):
    ap = harness.parser(__doc__, device=True)
    ap.add_argument("--arch", default="paper-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n_train", type=int, default=60000)
    ap.add_argument("--n_test", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data_root", default=None)
    args = ap.parse_args(argv)

    train = load_dataset(
        "FashionMNISTBinarized",
        {"split": "train", "dynamic": True},
        args.data_root,
        download=False,
        max_examples=args.n_train,
    ).to(args.device)
    test = load_dataset(
        "FashionMNISTBinarized", {"split": "validation"}, args.data_root, download=False, max_examples=args.n_test
    ).to(args.device)
    x_test = test.fixed()
    torch.manual_seed(0)
    base = VAE(ModelConfig(train.image_shape, args.arch, "bernoulli")).to(args.device)
    print(harness.header())
    print(
        f"{args.arch} on {args.device}, {len(train)} training images, batch {args.batch}, "
        f"{args.epochs} epochs; ELBO on {x_test.shape[0]} test images (float32 evaluation)"
    )
    print("| precision | epoch | s/epoch | test ELBO (nats) |\n|---|---|---|---|")
    results = {}
    for precision in ("float32", "bfloat16"):
        model = copy.deepcopy(base)
        opt = make_optimizer(model, 1e-3)
        gen = torch.Generator(args.device).manual_seed(1)
        config = TrainingConfig(
            epochs=args.epochs,
            batch_size=args.batch,
            learning_rate=1e-3,
            free_nats=2.0,
            free_nats_epochs=args.epochs,
            warmup_epochs=args.epochs / 2,
            precision=precision,
        )
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
        for epoch in range(args.epochs):
            took = harness.seconds(
                lambda: train_epochs(
                    model,
                    train.x,
                    config,
                    transform=train.transform,
                    generator=gen,
                    optimizer=opt,
                    start_epoch=epoch,
                    end_epoch=epoch + 1,
                ),
                sync,
            )
            results[precision] = mean_elbo(model, x_test)
            print(f"| {precision} | {epoch + 1} | {took:.1f} | {results[precision]:.2f} |", flush=True)
    print(
        f"bfloat16 - float32 test ELBO after {args.epochs} epochs: {results['bfloat16'] - results['float32']:+.2f} nats"
    )


if __name__ == "__main__":
    main()
