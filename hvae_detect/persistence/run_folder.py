"""A training run's folder, as ``hvae-detect train`` writes it (``hvae_detect.commands.train``):

    run.json              the run's configuration (``hvae_detect.commands.run_config.RunConfig``)
    log.jsonl             one JSON line per epoch (and its validation)
    checkpoints/last/     a model folder (``checkpoints``) plus optimizer.safetensors
    checkpoints/best/     the same at the best validation ELBO of the first validation set

Only rank 0 writes; a log line is flushed to disk before the next epoch starts, and a resume drops the
lines a kill left past its checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hvae_detect.persistence import checkpoints
from hvae_detect.persistence.atomic import atomic_write_text, recover_folder
from hvae_detect.training import distributed


class RunFolder:
    """A run's files (the module docstring); only rank 0 ``writes`` them."""

    def __init__(self, path, writes: bool):
        self.path, self.writes = Path(path), writes
        self.log = self.path / "log.jsonl"

    @classmethod
    def create(cls, path, ctx) -> RunFolder:
        """A new run's folder (rank 0 makes it; it must not exist)."""
        if ctx.is_main:
            Path(path).mkdir(parents=True, exist_ok=False)
        return cls(path, ctx.is_main)

    def read_config(self) -> dict:
        """run.json (``hvae_detect.commands.run_config.RunConfig.from_json`` reads it)."""
        if not (self.path / "run.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a run folder (run.json missing)")
        return json.loads((self.path / "run.json").read_text())

    def write_config(self, config: dict) -> None:
        if self.writes:
            atomic_write_text(self.path / "run.json", json.dumps(config, indent=1))

    def append_log(self, line: dict) -> None:
        if self.writes:
            with open(self.log, "a") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def drop_log_after(self, epoch: int) -> None:
        """Drop log lines past ``epoch`` (written before a kill, after the checkpoint a resume starts
        from) and a line a kill cut short."""
        if not self.writes or not self.log.is_file():
            return
        lines = self.log.read_text().splitlines()
        keep = [line for line in lines if _up_to(line, epoch)]
        if len(keep) != len(lines):
            atomic_write_text(self.log, "".join(line + "\n" for line in keep))

    def save(self, which: str, model, optimizer, generator, state: dict) -> None:
        if self.writes:
            checkpoints.save_checkpoint(self.path / "checkpoints" / which, model, optimizer, generator, state)

    def load_last(self, model, optimizer, generator, ctx) -> dict:
        """The state of the last checkpoint, loaded into place; a run without a complete one is refused."""
        last = self.path / "checkpoints" / "last"
        if ctx.is_main:
            for folder in (last, self.path / "checkpoints" / "best"):  # finish or clear a write a kill interrupted
                recover_folder(folder, cleanup=True)
        distributed.barrier(ctx, "the recovery of the last checkpoint")
        try:
            return checkpoints.load_checkpoint(last, model, optimizer, generator)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ValueError(
                f"cannot resume {self.path}: its last checkpoint is not complete ({e}); nothing was changed. "
                "Start a new run, or score its best checkpoint"
            ) from None


def _up_to(line: str, epoch: int) -> bool:
    """Whether a log line is whole and of ``epoch`` or before."""
    try:
        return json.loads(line).get("epoch", 0) <= epoch
    except json.JSONDecodeError:
        return False
