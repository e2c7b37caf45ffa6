"""A few-step toy TumorGen shared by the tests of training options (dropout, tumor swap, the learning-rate
schedule): one tiny PREP and toy VAE, then as many short flow runs, and resumes, as a test needs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import write_tiny_prep
from test_learning_box_windows import OVERRIDES


@dataclass(frozen=True)
class ToyFlow:
    prep: Path
    vae: Path
    config: object  # tumorgen.config.Config: the toy preset with the test's overrides

    def train(self, out: Path, overrides: tuple[str, ...] = (), *, resume: bool = False) -> dict:
        """Train (or resume) a flow run in OUT with the config plus `overrides`; its last raw weights."""
        from tumorgen.config import apply_overrides
        from tumorgen.training.checkpoint import load_checkpoint
        from tumorgen.training.tumorgen_stage import train_tumorgen

        config = apply_overrides(self.config, list(overrides))
        train_tumorgen(data=self.prep, vae_run=self.vae, out=out, config=config, resume=resume, progress=False)
        return load_checkpoint(out / "checkpoints" / "last.pt", expected_kind="tumorgen")["model"]

    def resume_after_crash(self, run: Path, step: int, overrides: tuple[str, ...] = ()) -> dict:
        """A crash right after `step`: a copy of RUN as it was then (its step checkpoint as last.pt),
        resumed with the same config; its last raw weights."""
        resumed = run.parent / f"{run.name}_resumed"
        shutil.copytree(run, resumed)
        shutil.copyfile(resumed / "checkpoints" / f"step_{step:07d}.pt", resumed / "checkpoints" / "last.pt")
        return self.train(resumed, overrides, resume=True)


def toy_flow(root: Path, overrides: tuple[str, ...] = ()) -> ToyFlow:
    """A 4-case tiny PREP under ROOT and a 4-step toy VAE; flow runs use OVERRIDES + 4 windows a case + `overrides`."""
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.training.vae_stage import train_vae

    prep = write_tiny_prep(root / "prep", size=32, n_cases=4, seed=2)
    config = apply_overrides(load_config("ibsi"), OVERRIDES + ["vae_train.steps=4", "data.windows_per_case=4",
                                                               *overrides])
    train_vae(data=prep, out=root / "vae", config=config, progress=False)
    return ToyFlow(prep=prep, vae=root / "vae", config=config)
