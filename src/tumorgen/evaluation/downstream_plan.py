"""The downstream study's plan: which real and synthetic cases each cell sees (`evaluation.downstream`).

- Real cases: per seed, one seeded permutation of the train split (`real_order`); a cell with n real
  cases takes its first n, so the sets are nested and every arm of a (n, seed) sees the same cases.
- Synthetic cases (`synthetic_count`, `synthetic_plan`): the j-th comes from the j-th tumor case of
  those n (round robin), its k-th sample; `plan_placement` gives its box, mode and seed from the real
  case and the seed alone, so every arm puts its tumor into the same box with the same seed.
- `tumorgen-own`: generators trained on a cell's own n real cases live in `own_folder(root, n, seed)`
  (`benchmarks/downstream_generators.py` trains them); `own_generators` reads their finished record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorgen.augmentation.rand_tumor import placement_box, regeneration_box
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import read_json_index
from tumorgen.synthesis.boxes import body_mask
from tumorgen.synthesis.pipeline import derived_seed

ARMS = ("real", "tumorgen", "tumorgen-own", "syntumor", "difftumor", "bld")
MODEL_ARMS = ("tumorgen", "tumorgen-own", "difftumor", "bld")  # need a run folder
OWN_ARM = "tumorgen-own"  # TumorGen trained on the cell's own n real cases (benchmarks/downstream_generators.py)
OWN_DONE = "generators.json"  # written last in a (n, seed) folder of --tumorgen-own: both stages finished
OWN_FORMAT = "tumorgen-downstream-generators"  # the "format" of plan.json and generators.json there
MODES = ("regenerate", "place")


def real_order(train: list[str], seed: int) -> list[str]:
    """The seed's permutation of the train split; a cell with n real cases takes its first n."""
    rng = np.random.default_rng(derived_seed(seed, "real-order"))
    return [train[i] for i in rng.permutation(len(train))]


def own_folder(root: Path, n_real: int, seed: int) -> Path:
    """Where `downstream_generators.py` trains the generators of cell (n, seed): <root>/n005_s0/."""
    return Path(root) / f"n{n_real:03d}_s{seed}"


def own_generators(root: Path, n_real: int, seed: int, real: list[str]) -> dict | None:
    """The finished record of the generators trained on exactly `real`, or None (not trained, not finished)."""
    done = own_folder(root, n_real, seed) / OWN_DONE
    if not done.is_file():
        return None
    record = read_json_index(done, fmt=OWN_FORMAT, required=("real_cases", "trained"))
    if record["real_cases"] != real:
        raise fail_on(done, f"was trained on other real cases than cell n = {n_real}, seed {seed} takes "
                            "(another dataset or split?); train them again into another folder")
    return record


def synthetic_count(spec: str, n_real: int) -> int:
    """`--synthetic`: "2x" -> 2 n, "12" -> 12."""
    text = spec.strip().lower()
    try:
        if text.endswith("x"):
            count = round(float(text[:-1]) * n_real)
        else:
            count = int(text)
    except ValueError:
        raise TumorGenError(f"--synthetic must be a count (e.g. 20) or a multiple of n (e.g. 2x), got {spec!r}") from None
    if count < 0:
        raise TumorGenError(f"--synthetic must not be negative, got {spec!r}")
    return count


def synthetic_plan(sources: list[str], count: int) -> list[tuple[str, int]]:
    """(case, k) of each synthetic case: round robin over the tumor cases a cell sees."""
    if not sources:
        return []
    return [(sources[j % len(sources)], j // len(sources)) for j in range(count)]


@dataclass(frozen=True)
class Placement:
    """Where sample (case, k) of a seed goes: the same for every arm."""

    mode: str  # "regenerate" or "place"
    box: tuple[int, int, int, int, int, int]
    seed: int


def plan_placement(suv: np.ndarray, label: np.ndarray, *, case: str, k: int, seed: int,
                   modes: tuple[str, ...]) -> Placement:
    """The box and mode of sample k of a tumor case, from the real case and the seed alone."""
    own = regeneration_box(label)
    if own is None:
        raise TumorGenError(f"case {case}: no tumor box to regenerate (is it a healthy case?)")
    sample_seed = derived_seed(seed, case, k)
    if modes[k % len(modes)] == "place":
        size = [b - a for a, b in zip(own[:3], own[3:])]
        placed = placement_box(label, size=size, rng=np.random.default_rng(derived_seed(seed, case, k, 1)),
                               region=body_mask(suv))
        if placed is not None:
            return Placement("place", placed, sample_seed)
    return Placement("regenerate", own, sample_seed)



def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise TumorGenError(f"--{what} is empty")
    return items


def _integer(text: str, message: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TumorGenError(message) from None


def parse_seeds(text: str) -> list[int]:
    seeds = [_integer(s, f"--seeds takes comma-separated integers, got {text!r}") for s in parse_list(text, "seeds")]
    if any(s < 0 for s in seeds):
        raise TumorGenError(f"--seeds must not be negative, got {text!r}")
    return seeds


def parse_n_values(text: str, n_train: int, notes: list[str]) -> list[int]:
    values = []
    for item in parse_list(text, "n-real"):
        if item.lower() == "all":
            n = n_train
        else:
            n = _integer(item, f"--n-real takes integers or 'all', got {item!r}")
            if n < 1:
                raise TumorGenError(f"--n-real values must be >= 1, got {n}")
            if n > n_train:
                notes.append(f"n = {n} is more than the {n_train} training cases: all are used")
                n = n_train
        if n not in values:
            values.append(n)
    return sorted(values)
