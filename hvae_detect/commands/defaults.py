"""The commands' defaults that the command line's help shows, in a module that imports nothing.

``hvae-detect --help`` and its usage errors are answered from these without importing the
commands themselves (they import torch, scikit-learn and matplotlib); the commands read them
from here too, so each value has one home.
"""

# ``hvae-detect demo``: the configuration picked by measurement (issue 15; README "Two commands").
DEMO_EPOCHS = 8
DEMO_IW_SAMPLES = 1  # S, importance samples of L
DEMO_IW_SAMPLES_LK = 1  # S', importance samples of L>k
PAPER_EPOCHS = 10

# ``hvae-detect train``: the paper's flags and their values (the --model names are the model
# registry's, ``hvae_detect.models.registry.model_names``, which imports nothing heavy either).
LIKELIHOOD_FLAGS = {
    "BernoulliLikelihoodConv2d": "bernoulli",
    "DiscretizedLogisticMixLikelihoodConv2d": "dlogmix",
    "bernoulli": "bernoulli",
    "dlogmix": "dlogmix",
}
SEED_TRAIN = '{"FashionMNISTBinarized": {"dynamic": true, "split": "train"}}'
SEED_VAL = (
    '{"FashionMNISTBinarized": {"dynamic": false, "split": "validation"}, '
    '"MNISTBinarized": {"dynamic": false, "split": "validation"}}'
)
