"""The selection rules, each against a hand computation: checkpoint epoch, plateau, lr, champion."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.tracking.selection import (
    beats_champion,
    best_epoch_index,
    choose_lr,
    default_champion,
    plateaued,
    selection_score,
    smoothed,
)


def test_the_checkpoint_is_the_best_trailing_mean_not_the_luckiest_epoch() -> None:
    curve = [10.0, 30.0, 12.0, 20.0, 21.0, 22.0]  # epoch 2 is one lucky val epoch
    means = [10.0, 40 / 2, 52 / 3, 62 / 3, 53 / 3, 63 / 3]  # trailing means of 1, 2, then 3 epochs
    assert smoothed(curve, 3) == [sum(curve[max(0, i - 2) : i + 1]) / min(i + 1, 3) for i in range(6)]
    assert [round(m, 9) for m in smoothed(curve, 3)] == [round(m, 9) for m in means]
    assert best_epoch_index(curve, 1) == 1  # unsmoothed: the lucky epoch
    assert best_epoch_index(curve, 3) == 5  # smoothed: the last epoch (21.0 > 20.67 at epoch 4)
    assert selection_score(curve, 3) == 21.0 and selection_score([], 3) == float("-inf")
    assert best_epoch_index([5.0, 7.0, 7.0], 1) == 1  # ties: the earliest


def test_a_plateau_is_read_off_the_smoothed_curve() -> None:
    assert not plateaued([1.0, 2.0, 3.0], 1, patience=3)  # too short to tell
    assert plateaued([1.0, 5.0, 4.0, 5.0], 1, patience=2)  # 4 and 5 never beat 5
    assert not plateaued([1.0, 5.0, 4.0, 5.5], 1, patience=2)
    assert plateaued([1.0, 5.0, 4.0, 5.5], 1, patience=2, min_delta=1.0)


def test_the_lr_of_the_best_smoothed_run_and_the_smaller_on_ties() -> None:
    # smoothed over 3: 1e-3 peaks at 16.3, 3e-3 at 25.0 (its first epoch); unsmoothed 1e-3's 20 < 25 too
    assert choose_lr({1e-3: [10.0, 20.0, 19.0], 3e-3: [25.0, 12.0, 12.0]}, 3) == 3e-3
    assert choose_lr({1e-3: [10.0, 20.0, 19.0], 3e-3: [12.0, 12.0, 19.5]}, 3) == 1e-3  # 16.3 > 14.5
    assert choose_lr({1e-3: [1.0, 2.0], 3e-3: [1.0, 2.0]}, 1) == 1e-3
    assert choose_lr({1e-3: [1.0, 2.0], 3e-3: [1.0, 2.5]}, 1) == 3e-3


@dataclass(frozen=True)
class V:
    name: str
    version: str
    val_r1: float
    dataset: str
    data: str
    val_queries: int

    @property
    def population(self) -> tuple[str, str]:
        return self.dataset, self.data


def test_a_champion_falls_only_to_a_better_model_on_the_same_data_or_a_larger_val_split() -> None:
    main = V("tbpr-global", "1", 20.0, "synth", "sha256:a", 600)
    assert beats_champion(V("tbpr-global", "2", 21.0, "synth", "sha256:a", 600), main)
    assert not beats_champion(V("tbpr-global", "2", 20.0, "synth", "sha256:a", 600), main)  # ties keep it
    quick = V("tbpr-global", "3", 60.0, "synth", "sha256:q", 120)  # a tiny split's lucky R1
    assert not beats_champion(quick, main) and beats_champion(main, quick)
    assert not beats_champion(main, main)


def test_the_default_model_is_the_best_champion_on_the_largest_val_split() -> None:
    a = V("tbpr-global", "1", 20.0, "synth", "sha256:a", 600)
    b = V("tbpr-spatial", "1", 22.0, "synth", "sha256:a", 600)
    q = V("tbpr-mixed", "1", 70.0, "synth", "sha256:q", 120)
    best, compared, elsewhere = default_champion([q, a, b])
    assert (best, compared, elsewhere) == (b, [a], [q])
