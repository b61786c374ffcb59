"""CPU defaults: the OpenMP wait policy (``hvae_detect.threads``) applies only where the user chose
nothing and only before torch is imported; ``precision="auto"`` follows the CPU's bfloat16 flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from hvae_detect import precision, threads
from hvae_detect.training import loop


def test_the_policy_applies_when_nothing_is_set_and_torch_is_not_imported():
    env = {"PATH": "/bin"}
    assert threads.apply_wait_policy(env, modules={}) == "applied"
    assert env == {"PATH": "/bin", **threads.POLICY}


@pytest.mark.parametrize("name", threads.USER_SETTINGS)
def test_a_wait_setting_of_the_user_is_kept(name):
    env = {name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "200"}
    before = dict(env)
    assert threads.apply_wait_policy(env, modules={}) == "user setting kept"
    assert env == before


def test_nothing_changes_once_torch_is_imported():
    env = {}
    assert threads.apply_wait_policy(env, modules={"torch": object()}) == "too late: torch imported"
    assert env == {}


def _child(code: str, **env) -> str:
    full = {k: v for k, v in os.environ.items() if k not in threads.USER_SETTINGS + ("OMP_NUM_THREADS",)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


_CLI_THEN_TORCH = (
    "import os\nfrom hvae_detect import cli\n"
    "try:\n    cli.main(['results', '--help'])\nexcept SystemExit:\n    pass\n"
    "import torch\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())"
)


def test_the_command_line_applies_the_policy_before_torch_and_keeps_thread_counts():
    default_threads = _child("import torch\nprint(torch.get_num_threads())").splitlines()[-1]
    out = _child(_CLI_THEN_TORCH).splitlines()[-1].split()
    assert out == ["PASSIVE", default_threads]


def test_the_command_line_keeps_the_users_settings():
    out = _child(_CLI_THEN_TORCH, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1").splitlines()[-1].split()
    assert out == ["ACTIVE", "1"]


def test_importing_the_package_before_torch_applies_the_policy_and_after_torch_does_not():
    code = "import os\nimport {first}\nimport {second}\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    assert _child(code.format(first="hvae_detect", second="torch")).splitlines()[-1] == "PASSIVE"
    assert _child(code.format(first="torch", second="hvae_detect")).splitlines()[-1] == "None"


def test_set_num_threads_of_the_user_survives_training():
    import torch

    from hvae_detect.models.config import ModelConfig
    from hvae_detect.models.vae import VAE
    from hvae_detect.training.config import TrainingConfig

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = VAE(
            ModelConfig(
                (1, 8, 8),
                {
                    "config_deterministic": [
                        [
                            {
                                "block": "ResBlockConv2d",
                                "out_channels": 4,
                                "kernel_size": 3,
                                "stride": 2,
                                "weightnorm": True,
                                "gated": False,
                            }
                        ]
                    ],
                    "config_stochastic": [{"block": "GaussianDense", "latent_features": 2, "weightnorm": True}],
                },
            )
        )
        x = torch.bernoulli(torch.full((8, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
        loop.train_epochs(model, x, TrainingConfig(epochs=1, batch_size=4))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("has_bf16, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_precision_follows_the_cpus_bfloat16_flag(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: has_bf16)
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("auto", "cuda") == "bfloat16"
    assert precision.resolve_precision("float32", "cpu") == "float32"  # explicit choices are kept
    assert precision.resolve_precision("bfloat16", "cpu") == "bfloat16"


def test_the_bfloat16_flag_is_read_from_cpuinfo(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, expected in (
        ("fpu sse avx512f avx512_bf16", True),
        ("fpu amx_bf16 amx_tile", True),
        ("fpu sse avx2 avx512f", False),
    ):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(
            builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k)
        )
        precision.cpu_has_bfloat16.cache_clear()
        assert precision.cpu_has_bfloat16() is expected
    monkeypatch.setattr(builtins, "open", real_open)
    precision.cpu_has_bfloat16.cache_clear()


@pytest.mark.parametrize("arithmetic, channels_last", [("float32", True), ("bfloat16", False)])
def test_cpu_training_takes_channels_last_weights_in_float32_only(monkeypatch, arithmetic, channels_last):
    """On a CPU, bfloat16 steps measured faster with NCHW kernels, float32 steps keep channels-last weights."""
    import contextlib

    import torch
    from conftest import images_for, tiny_model

    from hvae_detect.training.config import TrainingConfig

    model, entered = tiny_model(), []

    @contextlib.contextmanager
    def recorded():
        entered.append(True)
        yield

    monkeypatch.setattr(model, "channels_last_weights", recorded)
    loop.train_epochs(
        model,
        images_for(model, 8),
        TrainingConfig(epochs=1, batch_size=4, precision=arithmetic),
        generator=torch.Generator().manual_seed(0),
    )
    assert bool(entered) is channels_last
