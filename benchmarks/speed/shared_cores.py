"""Shared cores: how much slower do training and scoring run beside another CPU-bound process,
with torch's default OpenMP waiting ("spin") and with the package's policy ("passive",
``hvae_detect.threads``, which ``hvae-detect`` applies before it imports torch)?

    python benchmarks/speed/shared_cores.py                        # ~8 minutes on 2 cores
    python benchmarks/speed/shared_cores.py --seconds 4 --repeats 2 --workloads train   # quick
    python benchmarks/speed/shared_cores.py --threads 1 2          # also compare thread counts
    python benchmarks/speed/shared_cores.py --competitors          # alone only: what passive waiting costs idle
    python benchmarks/speed/shared_cores.py --policies spin passive bounded --spincount 10000   # a bounded spin too

Each measurement is a fresh interpreter (the wait policy is read once, when torch is imported)
running the workload for ``--seconds``: training steps of the "small" architecture (batch 64,
binary 28x28 images: the demo's step) or scoring passes (``importance_bounds``, 32 images, S = 4,
L>1 and L>2 with one sample each). Competitors, started before and stopped after each
measurement: "matmul" (a second python doing float32 matmuls with torch's default threads and
wait policy: another torch job) and "busy" (a single-threaded pure-python loop). Runs are
alternated (configurations in order, then reversed) so a changing background load hits all alike.
A slowdown is the median images/s alone over the median beside the competitor, same policy; on
2 cores the fair share is 2x. A wait policy the caller set in the environment governs both
variants, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

COMPETITORS = {
    "matmul": "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a)\n",
    "busy": "while True:\n    pass\n",
}


def worker(workload: str, seconds: float, policy: str, threads: int, spincount: int) -> dict:
    """Runs in a fresh interpreter: apply the policy (or not), then import torch and time the workload."""
    if policy == "passive":
        from hvae_detect.threads import apply_wait_policy

        apply_wait_policy()
    elif policy == "bounded":  # libgomp spins this many iterations, then sleeps (its default: 300,000)
        os.environ["GOMP_SPINCOUNT"] = str(spincount)
    import torch

    from hvae_detect.models.architectures import PRESETS
    from hvae_detect.models.config import ModelConfig
    from hvae_detect.models.registry import make_model
    from hvae_detect.scoring.engine import importance_bounds
    from hvae_detect.training.loop import make_optimizer, training_loss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(ModelConfig((1, 28, 28), PRESETS["small"], "bernoulli"))
    x = torch.bernoulli(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    opt, gen = make_optimizer(model, 1e-3), torch.Generator().manual_seed(1)

    def train_step():
        with model.channels_last_weights():
            loss, _, _ = training_loss(model, x, 0.5, 2.0, gen, "element")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return x.shape[0]

    def score_pass():
        importance_bounds(model.eval(), x[:32], iw_samples=4, iw_samples_lk=1, seed=0)
        return 32

    step = train_step if workload == "train" else score_pass
    for _ in range(2):
        step()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        n += step()
    wall = time.perf_counter() - t0
    return {
        "images_per_s": n / wall,
        "cpu_per_wall": (time.process_time() - c0) / wall,
        "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def measure(workload, policy, competitor, seconds, threads, spincount=10000):
    env = {k: v for k, v in os.environ.items()}
    rival = None
    if competitor != "none":  # the competitor gets the caller's environment, never the package's policy
        rival = subprocess.Popen([sys.executable, "-c", COMPETITORS[competitor]], env=env)
        time.sleep(1.0)  # let it reach its loop
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                workload,
                "--seconds",
                str(seconds),
                "--policy",
                policy,
                "--threads",
                str(threads),
                "--spincount",
                str(spincount),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = harness.parser(__doc__, repeats=3)
    ap.add_argument("--workloads", nargs="+", default=["train", "score"], choices=["train", "score"])
    ap.add_argument(
        "--competitors",
        nargs="*",
        default=["matmul", "busy"],
        choices=sorted(COMPETITORS),
        help="beside the measurement alone; none named: alone only (the policies on an idle machine)",
    )
    ap.add_argument(
        "--policies",
        nargs="+",
        default=["spin", "passive"],
        choices=["spin", "passive", "bounded"],
        help="spin: torch's default; passive: hvae_detect.threads.apply_wait_policy(); bounded: "
        "GOMP_SPINCOUNT=--spincount",
    )
    ap.add_argument("--threads", nargs="+", type=int, default=[0], help="torch threads (0: torch's default)")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    ap.add_argument(
        "--spincount",
        type=int,
        default=10000,
        help='the "bounded" policy: GOMP_SPINCOUNT, spins before a waiting thread sleeps',
    )
    ap.add_argument("--worker", choices=["train", "score"], help=argparse.SUPPRESS)
    ap.add_argument("--policy", default="spin", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds, args.policy, args.threads[0], args.spincount)))
        return
    user = {
        k: os.environ[k]
        for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
        if k in os.environ
    }
    print(
        "# " + harness.header(*([f"caller's environment (governs both policies): {user}"] if user else [])),
        flush=True,
    )
    configs = [
        (w, p, t, c)
        for w in args.workloads
        for p in args.policies
        for t in args.threads
        for c in ["none", *args.competitors]
    ]
    results = {cfg: [] for cfg in configs}
    for r, cfg in harness.alternating(configs, args.repeats):
        out = measure(cfg[0], cfg[1], cfg[3], args.seconds, cfg[2], args.spincount)
        results[cfg].append(out)
        print(
            f"  repeat {r + 1}: {cfg}  {out['images_per_s']:.1f} img/s  cpu/wall {out['cpu_per_wall']:.2f}  "
            f"threads {out['threads']}  load {harness.load()}",
            flush=True,
        )
    print(f"\nload averages at the end: {harness.load()}")
    print(
        "\n| workload | policy | threads | competitor | img/s (median; min-max) | cpu/wall | slowdown vs alone |\n"
        "|---|---|---|---|---|---|---|"
    )
    for cfg, outs in results.items():
        ips = [o["images_per_s"] for o in outs]
        alone = statistics.median(o["images_per_s"] for o in results[(*cfg[:3], "none")])
        med = statistics.median(ips)
        print(
            f"| {cfg[0]} | {cfg[1]} | {outs[0]['threads']} | {cfg[3]} | {med:.1f} ({min(ips):.1f}-{max(ips):.1f}) | "
            f"{statistics.median(o['cpu_per_wall'] for o in outs):.2f} | "
            f"{'-' if cfg[3] == 'none' else f'{alone / med:.2f}x'} |"
        )
    if "spin" in args.policies and "passive" in args.policies:
        print("\npassive / spin images/s, same workload, threads and competitor (> 1: the policy is faster):")
        for w, p, t, c in configs:
            if p == "passive":
                ratio = statistics.median(o["images_per_s"] for o in results[(w, p, t, c)]) / statistics.median(
                    o["images_per_s"] for o in results[(w, "spin", t, c)]
                )
                print(f"  {w:<6} threads {t or 'default'}  {c:<7} {ratio:.2f}")


if __name__ == "__main__":
    main()
