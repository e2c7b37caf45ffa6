"""Tumor swap (`flow.tumor_swap`): which window's tumor each training window carries, what the batch
takes from which, the config's refusals, and a toy training run that uses it."""

from __future__ import annotations

import pytest
import torch

from tumorgen.training.tumor_swap import swap_donors, swapped_batch


def test_no_share_keeps_every_window_and_draws_nothing():
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    chosen = torch.arange(8)
    assert torch.equal(swap_donors(chosen, count=8, share=0.0, generator=gen), chosen)
    assert torch.equal(gen.get_state(), state)


def test_a_share_swaps_that_share_for_other_windows_and_repeats_with_its_seed():
    chosen = torch.randint(50, (20000,), generator=torch.Generator().manual_seed(0))
    donors = swap_donors(chosen, count=50, share=0.3, generator=torch.Generator().manual_seed(1))
    again = swap_donors(chosen, count=50, share=0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(donors, again)
    swapped = donors != chosen
    assert swapped.float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert donors.min() >= 0 and donors.max() < 50
    # a swapped window's donor is any other window, about uniformly
    counts = torch.bincount(donors[swapped], minlength=50).float()
    assert counts.min() > 0.6 * counts.mean()


def test_the_batch_takes_the_tumor_from_the_donor_and_the_context_from_the_window():
    n = 6
    value = torch.arange(n, dtype=torch.float32)
    bank = {"image": value.reshape(n, 1, 1, 1, 1).expand(n, 1, 4, 4, 4), "mask": value.reshape(n, 1, 1, 1, 1) + 10,
            "latent": value.reshape(n, 1, 1, 1, 1) + 20, "box": value.reshape(n, 1, 1, 1, 1) + 30,
            "uptake": value + 40, "context": value.reshape(n, 1, 1, 1, 1) + 50}
    chosen, tumor = torch.tensor([0, 1, 2]), torch.tensor([0, 4, 5])
    batch = swapped_batch(bank, chosen, tumor)
    assert batch["image"][:, 0, 0, 0, 0].tolist() == [0, 4, 5]
    assert batch["mask"].flatten().tolist() == [10, 14, 15]
    assert batch["latent"].flatten().tolist() == [20, 24, 25]
    assert batch["box"].flatten().tolist() == [30, 34, 35]
    assert batch["uptake"].tolist() == [40, 44, 45]
    assert batch["context"].flatten().tolist() == [50, 51, 52]
    assert set(swapped_batch({"latent": bank["latent"]}, chosen, tumor)) == {"latent"}


@pytest.mark.parametrize("kwargs, problem", [
    ({"share": 1.0, "count": 4}, "share must be in"),
    ({"share": -0.1, "count": 4}, "share must be in"),
    ({"share": 0.5, "count": 0}, "at least one window"),
])
def test_bad_swap_arguments_are_refused(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        swap_donors(torch.zeros(2, dtype=torch.long), **kwargs)


def test_a_bank_field_it_does_not_know_or_unpaired_windows_are_refused():
    with pytest.raises(ValueError, match="unknown window-bank field"):
        swapped_batch({"noise": torch.zeros(2)}, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="must pair up"):
        swapped_batch({"latent": torch.zeros(2)}, torch.tensor([0]), torch.tensor([1, 0]))


@pytest.mark.parametrize("overrides, problem", [
    (["flow.tumor_swap=1.0"], "tumor_swap must be in"),
    (["flow.tumor_swap=0.5", "flow.erase_context=false"], "tumor_swap needs"),
    (["flow.tumor_swap=0.5", "data.window=volume", "flow.uptake_condition=false", "flow.uptake_embedding=false",
      "flow.uptake_dropout=0"], "tumor_swap needs"),
])
def test_the_config_refuses_a_swap_it_cannot_train(overrides, problem):
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.errors import TumorGenError

    with pytest.raises(TumorGenError, match=problem):
        apply_overrides(load_config("ibsi"), overrides)


@pytest.mark.slow
def test_a_toy_run_with_swaps_trains_repeatably_and_differs_from_one_without(tmp_path, one_thread):
    from conftest import assert_same_tensors
    from toy_flow import toy_flow

    toy = toy_flow(tmp_path, ("train.steps=6", "train.batch_size=4"))
    swapped = toy.train(tmp_path / "a", ("flow.tumor_swap=0.5",))
    again, plain = toy.train(tmp_path / "b", ("flow.tumor_swap=0.5",)), toy.train(tmp_path / "c", ("flow.tumor_swap=0",))
    assert_same_tensors(swapped, again, what="two runs with swaps")
    assert any(not torch.equal(swapped[k], plain[k]) for k in swapped)
