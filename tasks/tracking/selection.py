"""Every rule that picks a winner, each with one criterion, in one place (README "A fair contest"):

- the **checkpoint epoch** of a run: the epoch of the best trailing `window`-epoch mean of val R1
  (`best_epoch_index`), and the **plateau** that stops a run on that same smoothed curve (`plateaued`);
- the **learning rate** of an lr search: the rate whose run has the best smoothed val R1
  (`choose_lr`, the same `selection_score` the checkpoint maximises);
- the **champion** of a registered model: a version replaces it only on a higher val R1 on the same
  data, or when validated on a larger val split (`beats_champion`); the **default model** is the best
  champion on the largest val split (`default_champion`).

Test splits never enter any of them. Pure functions: the trainer (`tasks.train`), the lr search
(`flows.train`) and the registry (`tasks.tracking.store`, `tasks.tracking.models`) call them. They
live at the tracking layer because the registry, the lowest of their callers, decides champions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` values (fewer at the start): the curve that selection and the
    plateau rule read, so one lucky or unlucky val epoch decides neither."""
    windows = [values[max(0, i + 1 - window) : i + 1] for i in range(len(values))]
    return [sum(w) / len(w) for w in windows]


def selection_score(val_curve: Sequence[float], window: int) -> float:
    """What checkpoint selection maximises, and what an lr search compares runs by: the best smoothed
    val R1 of a run."""
    return max(smoothed(val_curve, window), default=float("-inf"))


def best_epoch_index(val_curve: Sequence[float], window: int) -> int:
    """Index of the epoch with the highest smoothed val R1 (the earliest on ties)."""
    curve = smoothed(val_curve, window)
    return max(range(len(curve)), key=lambda i: (curve[i], -i))


def plateaued(val_curve: Sequence[float], window: int, patience: int, min_delta: float = 0.0) -> bool:
    """True when the smoothed val R1 has not beaten its earlier best by more than `min_delta` for
    `patience` epochs."""
    curve = smoothed(val_curve, window)
    if len(curve) <= patience:
        return False
    return max(curve[-patience:]) <= max(curve[:-patience]) + min_delta


def choose_lr(val_curves: Mapping[float, Sequence[float]], window: int) -> float:
    """The learning rate whose run has the best `selection_score` (the smaller rate on ties)."""
    return max(val_curves, key=lambda lr: (selection_score(val_curves[lr], window), -lr))


class Validated(Protocol):
    """What a registered version says of its val R1 (`tasks.tracking.store.Version`)."""

    @property
    def version(self) -> str: ...
    @property
    def val_r1(self) -> float: ...
    @property
    def dataset(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def val_queries(self) -> int: ...


def beats_champion(candidate: Validated, current: Validated) -> bool:
    """Whether `candidate` should replace champion `current`: a higher val R1 on the same dataset and
    DATA (ties keep the champion; versions without these tags compare by val R1 alone); val R1 of other
    data does not compare, so there only a larger val split wins (a 2-epoch model on a small
    quick-profile split never displaces the main job's)."""
    if candidate.version == current.version:
        return False
    same_dataset = candidate.dataset == current.dataset or not (candidate.dataset and current.dataset)
    if same_dataset and (candidate.data == current.data or not (candidate.data and current.data)):
        return candidate.val_r1 > current.val_r1
    return candidate.val_queries > current.val_queries


class Champion(Validated, Protocol):
    @property
    def name(self) -> str: ...
    @property
    def population(self) -> tuple[str, str]: ...


C = TypeVar("C", bound=Champion)


def default_champion(champions: Sequence[C]) -> tuple[C, list[C], list[C]]:
    """(the default model, the other champions it was compared with, those validated on other data and
    not compared): the best val R1 among the champions of the data with the largest val split (more
    champions, then the name order, break ties)."""
    groups: dict[tuple[str, str], list[C]] = {}
    for champion in sorted(champions, key=lambda c: c.name):
        groups.setdefault(champion.population, []).append(champion)
    population = max(sorted(groups), key=lambda p: (max(c.val_queries for c in groups[p]), len(groups[p])))
    group = groups[population]
    best = max(group, key=lambda c: c.val_r1)
    elsewhere = [c for p, g in sorted(groups.items()) if p != population for c in g]
    return best, [c for c in group if c is not best], elsewhere
