"""One module per command of ``hvae-detect``: demo, train, score, results (argparse lives in ``hvae_detect.cli``)."""
