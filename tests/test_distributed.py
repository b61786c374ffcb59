"""Training and scoring over 2 processes (gloo on the CPU): the same model, the same scores, no hangs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO, TINY, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from hvae_detect.cli import main
from hvae_detect.commands.score import SHARD_IMAGES, shard_bounds
from hvae_detect.training.batches import LoaderBatches
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.distributed import SINGLE, Context
from hvae_detect.training.loop import train_epochs

X = np.random.default_rng(0).integers(0, 256, size=(64, 12, 12), dtype=np.uint8)
CONFIG = TrainingConfig(
    epochs=2, batch_size=16, learning_rate=1e-3, data_init=True, free_nats_mode="element", train_samples=2
)


def _binarize(x, u):
    return (u < x).float()


def _train(ctx):
    model = tiny_model(seed=0).train()
    batches = LoaderBatches(X, CONFIG.batch_size, prepare=_binarize, seed=5, ctx=ctx)
    history = train_epochs(model, batches, CONFIG, generator=torch.Generator().manual_seed(1))
    return model, history


def _ddp_worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, history = _train(Context(rank, 2))
        if rank == 0:
            torch.save({"weights": model.state_dict(), "history": history}, out)
        dist.barrier()  # leave together: a rank tearing gloo down while its peer still works aborted once
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_train_the_weights_one_process_trains(tmp_path):
    initial = {k: v.clone() for k, v in tiny_model(seed=0).state_dict().items()}
    model, history = _train(SINGLE)
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path / "ddp.pt")), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt")
    one = model.state_dict()
    # Float rounding only: the two runs differ by a small fraction of how far training moved the weights.
    moved = sum(((one[k] - initial[k]) ** 2).sum() for k in one) ** 0.5
    apart = sum(((one[k] - ddp["weights"][k]) ** 2).sum() for k in one) ** 0.5
    assert moved > 0.1 and apart < 0.01 * moved, (float(apart), float(moved))
    for a, b in zip(history, ddp["history"]):
        assert a["elbo"] == pytest.approx(b["elbo"], rel=1e-4) and len(b["images_per_s"]) == 2


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 70), per_rank=st.integers(1, 9), world=st.integers(1, 4), epoch=st.integers(0, 3))
def test_the_ranks_share_each_global_batch_of_one_process(n, per_rank, world, epoch):
    batch = per_rank * world
    shares = []
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, seed=7)
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
    one_sampler = DistributedSampler(range(n), num_replicas=1, rank=0, seed=7)
    one_sampler.set_epoch(epoch)
    one = list(one_sampler)
    steps = -(-n // batch)
    assert all(-(-len(s) // per_rank) == steps for s in shares)  # the same number of steps everywhere
    # One process's order, padded at the end with its start to equal shares (fewer than `world` images):
    # every global batch but the last is exactly one process's batch.
    padded = (one * world)[: len(shares[0]) * world]
    assert len(padded) - n < world
    for step in range(steps):
        together = sorted(i for s in shares for i in s[step * per_rank : (step + 1) * per_rank])
        assert together == sorted(padded[step * batch : (step + 1) * batch])


@given(n=st.integers(1, 5 * SHARD_IMAGES), world=st.integers(1, 64))
def test_shards_cover_a_set_once_in_order_and_give_every_rank_work(n, world):
    bounds = shard_bounds(n, world)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < end - start <= SHARD_IMAGES for start, end in bounds)
    assert len(bounds) >= min(n, world)


# ---- the command line under torchrun ------------------------------------------------------------

# Runs the command line; the rank named in $KILL_RANK SIGKILLs itself at its $KILL_AT-th training step
# or its $KILL_AT-th shard; $SHARD_IMAGES makes shards small.
LAUNCHED = r"""
import os, signal, sys
import hvae_detect.training.loop as training
from hvae_detect import HVAEOutlierDetector
from hvae_detect.commands import score
if "SHARD_IMAGES" in os.environ:
    score.SHARD_IMAGES = int(os.environ["SHARD_IMAGES"])
if os.environ.get("RANK") == os.environ.get("KILL_RANK"):
    count = [0]
    def hook(owner, name):
        inner = getattr(owner, name)
        def hooked(*args, **kwargs):
            count[0] += 1
            if count[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)
            return inner(*args, **kwargs)
        setattr(owner, name, hooked)
    hook(training, "training_loss")
    hook(HVAEOutlierDetector, "ood_scores")
from hvae_detect.cli import main
from hvae_detect.commands.score import SHARD_IMAGES, shard_bounds
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(tmp_path, nproc, argv, **env):
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    environ = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HVAE_DETECT_DIST_TIMEOUT": "60",
        **{k: str(v) for k, v in env.items()},
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        *argv,
    ]
    return subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=240)


def _train_argv(root, save_dir, epochs=3):
    det = [[{"block": "ResBlockConv2d", "out_channels": 4, "kernel_size": 3, "stride": 2}], [], []]
    return [
        "train",
        "--epochs",
        str(epochs),
        "--batch_size",
        "16",
        "--test_every",
        "1",
        "--free_nats_epochs",
        "2",
        "--warmup_epochs",
        "1",
        "--learning_rate",
        "1e-3",
        "--train_datasets",
        '{"MNISTBinarized": {"dynamic": true, "split": "train"}}',
        "--val_datasets",
        '{"MNISTBinarized": {"dynamic": false, "split": "validation"}}',
        "--config_deterministic",
        json.dumps(det),
        "--config_stochastic",
        json.dumps(TINY["config_stochastic"]),
        "--data_root",
        str(root),
        "--save_dir",
        str(save_dir),
        "--device",
        "cpu",
        "--no_download",
        "--quiet",
        # Data-dependent initialisation on these noise images makes a chaotic run (ELBO -7e4, where a
        # 1e-6 nudge to one weight changes the third epoch's ELBO by half): the DDP equality of the
        # initialisation is tested on a tamer model above.
        "--no-data_init",
    ]


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _weights(run):
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_it_resumes_on_another_world_size(noise_mnist_root, tmp_path):
    assert main(_train_argv(noise_mnist_root, tmp_path / "one") + ["--data_workers", "0"]) == 0  # streamed, 1 process
    (reference,) = (tmp_path / "one").iterdir()
    # 4 steps per epoch: rank 1 dies in the second epoch, after the first epoch's checkpoint.
    out = _torchrun(tmp_path, 2, _train_argv(noise_mnist_root, tmp_path / "two"), KILL_RANK=1, KILL_AT=6)
    assert out.returncode != 0
    assert "SIGKILL" in out.stderr or "lost another rank" in out.stderr, out.stderr[-3000:]
    (run,) = (tmp_path / "two").iterdir()
    assert json.loads((run / "checkpoints" / "last" / "config.json").read_text())["training_state"]["epoch"] == 1
    after_epoch_1 = _weights(run)
    assert json.loads((run / "run.json").read_text())["batches"] == "loader"
    out = _torchrun(tmp_path, 1, ["train", "--resume", str(run), "--device", "cpu", "--quiet"])
    assert out.returncode == 0, out.stderr[-3000:]
    epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    line = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert len(line["images_per_s"]) == 2 and all(r > 0 for r in line["images_per_s"])  # per rank, epoch 1
    # The same run up to float rounding (which Adam amplifies in weights with near-zero gradients):
    # the same ELBOs, and weights far closer to each other than to where epoch 1 left them.
    ref, got = _weights(reference), _weights(run)
    apart = sum(float(((ref[k] - got[k]) ** 2).sum()) for k in ref) ** 0.5
    moved = sum(float(((ref[k] - after_epoch_1[k]) ** 2).sum()) for k in ref) ** 0.5
    assert apart < 0.05 * moved, (apart, moved)
    for a, b in zip(_log(reference), _log(run)):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-4)
        assert a["val"]["MNIST test"]["elbo"] == pytest.approx(b["val"]["MNIST test"]["elbo"], rel=1e-4)
    # Scoring over 2 ranks writes exactly what one process writes; a killed scoring run resumes from its shards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1): CPU kernels' sums depend on the thread count
    try:
        assert (
            main(
                [
                    "score",
                    "--model",
                    str(run),
                    "--save_dir",
                    str(tmp_path / "s1"),
                    "--n_latents_skip",
                    "1",
                    "2",
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    argv = [
        "score",
        "--model",
        str(run),
        "--save_dir",
        str(tmp_path / "s2"),
        "--n_latents_skip",
        "1",
        "2",
        "--device",
        "cpu",
    ]
    out = _torchrun(tmp_path, 2, argv, SHARD_IMAGES=4, KILL_RANK=1, KILL_AT=3)
    assert out.returncode != 0 and not list((tmp_path / "s2").glob("scores-*.npz"))
    shards = list((tmp_path / "s2").glob(".shards-*/*.npz"))
    assert len(shards) >= 2, out.stderr[-3000:]
    out = _torchrun(tmp_path, 2, argv, SHARD_IMAGES=4)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"({len(shards)} read from" in out.stdout, out.stdout[-2000:]
    assert not list((tmp_path / "s2").glob(".shards-*"))  # removed once the files are written
    one = sorted((tmp_path / "s1").glob("scores-*.npz"))
    two = sorted((tmp_path / "s2").glob("scores-*.npz"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 2
    for a, b in zip(one, two):
        with np.load(a) as fa, np.load(b) as fb:
            assert fa.files == fb.files
            for name in fa.files:
                np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


def _lose_a_rank(rank, port, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", HVAE_DETECT_DIST_TIMEOUT="20"
    )
    from hvae_detect.training import distributed

    with distributed.session("cpu") as (ctx, _):
        distributed.barrier(ctx, "the start")
        if rank == 1:
            os._exit(0)  # gone without a word, as a killed process
        try:
            distributed.all_reduce_sum(torch.ones(3), ctx)
        except distributed.RankLost as e:
            with open(out, "w") as f:
                f.write(str(e))
            os._exit(0)


def test_a_lost_rank_is_an_error_that_says_so_not_a_hang(tmp_path):
    mp.spawn(_lose_a_rank, args=(_free_port(), str(tmp_path / "message")), nprocs=2)
    message = (tmp_path / "message").read_text()
    assert "rank 0 of 2 lost another rank during a sum over ranks" in message and "--resume" in message
