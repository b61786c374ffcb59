"""A training run's configuration (run.json) and folder: ``make_run_config`` checks the options of
``hvae-detect train`` and returns run.json's dict, which ``RunConfig.from_json`` reads (``to_json`` writes
it back); ``training_config_of`` reads a saved run's training settings; log.jsonl's validation keys are
written by ``auroc_key`` and read by ``read_auroc_key``. The run's files are read and written by
``hvae_detect.persistence.run_folder.RunFolder``.

run.json holds the model's options under ``hvae_detect.models.config.ModelConfig``'s keys (beside
"model", the family, and the run's data and training settings), so ``ModelConfig.from_json`` reads a
run of any age; the model options here default to the paper's (``PAPER_MODEL``), not ModelConfig's.
"""

from __future__ import annotations

import copy
import dataclasses

from hvae_detect.commands.common import parse_json
from hvae_detect.commands.defaults import LIKELIHOOD_FLAGS, SEED_TRAIN, SEED_VAL
from hvae_detect.data.dataset_names import default_data_root, parse_dataset_name, parse_dataset_options
from hvae_detect.likelihoods import resolve_likelihood
from hvae_detect.models.architectures import json_text_or_file, resolve_architecture, with_family
from hvae_detect.models.config import ModelConfig, ModelOptionError
from hvae_detect.models.registry import model_family, model_names
from hvae_detect.persistence.checkpoints import FORMAT_VERSION
from hvae_detect.training.config import SEED_TRAINING, TrainingConfig

__all__ = [
    "LIKELIHOOD_FLAGS",
    "PAPER_MODEL",
    "SEED_TRAIN",
    "SEED_VAL",
    "RunConfig",
    "auroc_key",
    "make_run_config",
    "read_auroc_key",
    "training_config_of",
]

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


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's configuration as its run.json holds it: what the run reads, typed, and every other key as
    it was. A run that changes a setting makes a new value (``with_training``, ``dataclasses.replace``).

    train_datasets, val_datasets  {name: {"dynamic", "split"}}; the first validation set is in-distribution
    training          the training settings (``TrainingConfig``)
    test_every        validate every this many epochs (and after the last)
    seed              of the weights, the batches' draws and the validation's
    data_root, n_train_examples, n_val_examples   where the sets are, and how many images of each are used
    batches           "memory" (the training set on the device), "loader" (streamed) or None (not
                      decided yet, or a run.json from before the choice existed: "memory")
    input_shape       (C, H, W) of the images, once the data loaded
    recorded          every other key: "model" (the family) and the model's options (``model_config``),
                      "format_version", the paper's flags given but not applied, ...
    order             run.json's keys in its order (None: every setting): ``to_json`` writes these (a
                      setting that an older run.json lacks stays out), then those set since
    """

    train_datasets: dict
    val_datasets: dict
    training: TrainingConfig
    test_every: int
    seed: int
    data_root: str
    n_train_examples: int | None = None
    n_val_examples: int | None = None
    batches: str | None = None
    input_shape: tuple | None = None
    recorded: dict = dataclasses.field(default_factory=dict)
    order: tuple | None = None

    _READ = ("train_datasets", "val_datasets", "test_every", "seed", "data_root", "n_train_examples", "n_val_examples")
    _SET_BY_THE_RUN = ("batches", "input_shape")  # written once they are not None

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        """The configuration of a run.json's dict (of any age) or of ``make_run_config``'s."""
        missing = [k for k in cls._READ[:5] if k not in data]
        if missing:
            raise ValueError(f"the run's configuration (run.json) lacks {missing}")
        typed = {*cls._READ, *cls._SET_BY_THE_RUN, *TrainingConfig.field_names()}
        shape = data.get("input_shape")
        return cls(
            **{k: copy.deepcopy(data.get(k)) for k in (*cls._READ, "batches")},
            training=training_config_of(data),
            input_shape=None if shape is None else tuple(shape),
            recorded={k: copy.deepcopy(v) for k, v in data.items() if k not in typed},
            order=tuple(data),
        )

    def to_json(self) -> dict:
        """run.json's dict: the keys it was read with, in their order, then the ones set since."""
        values = {
            **self.recorded,
            **{k: getattr(self, k) for k in self._READ},
            **vars(self.training),
            "batches": self.batches,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
        }
        order = self.order if self.order is not None else [k for k in values if k not in self._SET_BY_THE_RUN]
        order = [*order, *(k for k in self._SET_BY_THE_RUN if getattr(self, k) is not None)]
        return {k: copy.deepcopy(values[k]) for k in dict.fromkeys(order)}

    def with_training(self, **changes) -> RunConfig:
        """This configuration with the training settings ``changes`` (checked by ``TrainingConfig``)."""
        order = None if self.order is None else (*self.order, *(k for k in changes if k not in self.order))
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes), order=order)

    def model_config(self, input_shape) -> ModelConfig:
        """The model's options (``ModelConfig``) for images of ``input_shape``."""
        return ModelConfig.from_json({**self.recorded, "input_shape": list(input_shape)})


AUROC = "auroc_"  # log.jsonl's validation keys: "auroc_" and the statistic's key, its ">" written "gt"


def auroc_key(statistic_key: str) -> str:
    """log.jsonl's key of the validation AUROC of the statistic ``statistic_key``: "L>1" -> "auroc_Lgt1"."""
    return AUROC + statistic_key.replace(">", "gt")


def read_auroc_key(key: str) -> str | None:
    """The statistic key that ``auroc_key`` wrote ``key`` from ("auroc_Lgt1" -> "L>1"); None for another key."""
    return key[len(AUROC) :].replace("gt", ">") if key.startswith(AUROC) else None
