"""A training run's configuration (run.json): ``make_run_config`` checks the options of ``hvae-detect
train`` and ``training_config_of`` reads a saved run's training settings back.

run.json holds the model's options under ``hvae_detect.models.config.ModelConfig``'s keys (beside
"model", the family, and the run's data and training settings), so ``ModelConfig.from_json`` reads a
run of any age; the model options here default to the paper's (``PAPER_MODEL``), not ModelConfig's.
"""

from __future__ import annotations

from hvae_detect.commands.common import parse_json
from hvae_detect.commands.defaults import LIKELIHOOD_FLAGS, SEED_TRAIN, SEED_VAL
from hvae_detect.data.dataset_names import default_data_root, parse_dataset_name, parse_dataset_options
from hvae_detect.likelihoods import resolve_likelihood
from hvae_detect.models.architectures import json_text_or_file, resolve_architecture, with_family
from hvae_detect.models.config import ModelConfig, ModelOptionError
from hvae_detect.models.registry import model_family, model_names
from hvae_detect.persistence.checkpoints import FORMAT_VERSION
from hvae_detect.training.config import SEED_TRAINING, TrainingConfig

__all__ = ["LIKELIHOOD_FLAGS", "PAPER_MODEL", "SEED_TRAIN", "SEED_VAL", "make_run_config", "training_config_of"]

# The paper's command line's model options where they differ from ModelConfig's defaults.
PAPER_MODEL = {"activation": "ReLU", "likelihood_head": "paper"}


def make_run_config(
    training: TrainingConfig = SEED_TRAINING,
    *,
    train_datasets=SEED_TRAIN,
    val_datasets=SEED_VAL,
    architecture=None,
    config_deterministic=None,
    config_stochastic=None,
    likelihood=None,
    model=None,
    n_mix=ModelConfig.n_mix,
    test_every=10,
    seed=0,
    data_root=None,
    n_train_examples=None,
    n_val_examples=None,
    activation=PAPER_MODEL["activation"],
    likelihood_head=PAPER_MODEL["likelihood_head"],
    skip_stochastic=ModelConfig.skip_stochastic,
    q_dropout=ModelConfig.q_dropout,
    p_dropout=ModelConfig.p_dropout,
    log_scale_min=ModelConfig.log_scale_min,
    test_samples=1,
    test_importance_weighted=False,
    dynamic=None,
    not_applied=None,
) -> dict:
    """Validate a run's options and return its configuration (saved as run.json).

    The model options default to the paper's (ReLU, its likelihood head, skip connections, no
    dropout) and are checked by ``ModelConfig`` (an error names the flag). ``likelihood`` None is
    "auto", decided by the training sets' variant (``hvae_detect.likelihoods.resolve_likelihood``).
    ``dynamic`` (the paper's --dynamic) fills in "dynamic" for training sets whose JSON lacks it.
    ``test_samples`` / ``test_importance_weighted`` are recorded; ``not_applied`` records the paper's
    flags that were given but have no effect here (see ``hvae-detect train --help``).
    """
    training.validate()
    if model is not None:
        try:
            model_family(model)
        except ValueError:
            raise ValueError(
                f"--model must be one of {model_names()} (the paper's hierarchical VAE is 'VAE'), got {model!r}"
            ) from None
    if not isinstance(test_samples, int) or test_samples < 1:
        raise ValueError(f"--test_samples must be a positive integer, got {test_samples!r}")
    if dynamic is not None:
        train_datasets = parse_json(train_datasets, "--train_datasets")
        if isinstance(train_datasets, dict):
            train_datasets = {n: {"dynamic": bool(dynamic), **(o or {})} for n, o in train_datasets.items()}
    train = parse_dataset_options(train_datasets)
    val = parse_dataset_options(val_datasets)
    for name, opts in val.items():
        if opts["dynamic"]:
            raise ValueError(f"validation set {name} must have \"dynamic\": false (one fixed draw)")
    if (config_deterministic is None) != (config_stochastic is None):
        raise ValueError("give both --config_deterministic and --config_stochastic, or neither")
    if config_deterministic is not None:
        arch = resolve_architecture(
            {
                "config_deterministic": json_text_or_file(config_deterministic, "--config_deterministic"),
                "config_stochastic": json_text_or_file(config_stochastic, "--config_stochastic"),
            }
        )
    else:
        arch = resolve_architecture(architecture or "paper-mnist")
    arch = with_family(arch, model)  # --model sets the family; None keeps the architecture's (VAE if none)
    variants = {parse_dataset_name(n).variant for n in train}
    if len(variants) > 1:
        raise ValueError(f"all training datasets must share one variant, got {sorted(variants)}")
    variant = variants.pop()
    if likelihood is not None and likelihood not in LIKELIHOOD_FLAGS:
        raise ValueError(
            f"--likelihood must be one of {sorted(k for k in LIKELIHOOD_FLAGS if k[0].isupper())}, got {likelihood!r}"
        )
    likelihood = resolve_likelihood(LIKELIHOOD_FLAGS.get(likelihood, "auto"), variant=variant)
    if likelihood == "bernoulli" and variant != "Binarized":
        raise ValueError(f"the Bernoulli likelihood needs Binarized data, got {variant} training data")
    try:  # the run learns the input shape from its data (train_run writes it): a stand-in checks the rest
        config = ModelConfig(
            (1, 1, 1),
            arch,
            likelihood,
            n_mix,
            activation,
            likelihood_head,
            bool(skip_stochastic),
            q_dropout,
            p_dropout,
            log_scale_min,
        )
    except ModelOptionError as e:
        raise ValueError(f"--{e}") from None
    if not isinstance(test_every, int) or test_every < 1:
        raise ValueError(f"--test_every must be a positive integer, got {test_every!r}")
    options = {k: v for k, v in config.to_json().items() if k != "input_shape"}
    return {
        "format_version": FORMAT_VERSION,
        "model": config.family,
        "train_datasets": train,
        "val_datasets": val,
        **options,
        **vars(training),
        "test_every": test_every,
        "seed": seed,
        "data_root": str(data_root if data_root is not None else default_data_root()),
        "n_train_examples": n_train_examples,
        "n_val_examples": n_val_examples,
        "test_samples": test_samples,
        "test_importance_weighted": bool(test_importance_weighted),
        "not_applied": dict(not_applied or {}),
    }


def training_config_of(cfg: dict) -> TrainingConfig:
    """The run's training settings; a run.json written before a setting existed gets the value that
    run used: per-layer free nats and no data-dependent initialisation (TrainingConfig's defaults)."""
    return TrainingConfig(**{k: cfg[k] for k in TrainingConfig.field_names() if k in cfg})
