"""Where a command may write its output folder: a new or empty folder, or one its own earlier run wrote;
never a folder of the user's files, a folder that overlaps the command's inputs, or TBPR_HOME's stores.

Each stage calls `check_out_folder` with the names its layout module defines (its marker file is
written last, so its presence means a complete output of that stage); the CLI also calls
`check_outside_home`, since the flows themselves write into TBPR_HOME."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from tasks.core.env import home
from tasks.core.errors import TbprError


def overlaps(a: Path, b: Path) -> bool:
    """`a` and `b` (resolved) are the same path, or one is inside the other."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _own_entry(name: str, names: Collection[str]) -> bool:
    """`name` is one of the stage's files, or a temporary of one (`tasks.core.files.temp_path`)."""
    return name in names or any(name.startswith(f".{n}.") and name.endswith(".tmp") for n in names)


def written_by_stage(folder: Path, marker: str, names: Collection[str] = ()) -> bool:
    """`folder` is empty, holds the stage's `marker`, or holds only the stage's own files (`names`:
    what an interrupted run of the stage leaves before it writes the marker)."""
    if (folder / marker).is_file():
        return True
    return all(_own_entry(entry.name, {marker, *names}) for entry in folder.iterdir())


def check_out_folder(
    out: Path,
    *,
    command: str,
    marker: str,
    names: Collection[str] = (),
    inputs: Mapping[str, Path | None] | None = None,
    option: str = "--out",
) -> None:
    """Refuse (TbprError, nothing touched) an `out` that is a file, overlaps one of `inputs` (label ->
    path), or holds files that `tbpr command` did not write (`written_by_stage`)."""
    if out.exists() and not out.is_dir():
        raise TbprError(f"{option} {out} is a file; pass a folder for the `tbpr {command}` outputs")
    target = out.resolve()
    for label, path in (inputs or {}).items():
        if path is not None and overlaps(target, Path(path).resolve()):
            raise TbprError(
                f"{option} {out} overlaps the {label} {path} (the same folder, or one inside the other); "
                "choose an output folder outside the inputs, nothing was written"
            )
    if out.is_dir() and not written_by_stage(out, marker, names):
        raise TbprError(
            f"{option} {out} holds files that `tbpr {command}` did not write (it has no {marker}); "
            "choose a new or empty folder, nothing was changed"
        )


def check_outside_home(out: Path, option: str = "--out") -> None:
    """Refuse an `out` that is or holds TBPR_HOME or one of its stores, or lies inside a store the
    libraries manage (a DATA folder under data/ or an output under runs/ is fine)."""
    tbpr, target = home(), out.resolve()
    if tbpr.root.is_relative_to(target):
        raise TbprError(f"{option} {out} is or holds TBPR_HOME ({tbpr.root}); choose a folder outside it")
    managed = {
        "MLflow store": tbpr.mlflow_db,
        "MLflow artifacts": tbpr.mlartifacts,
        "cache": tbpr.feature_cache.parent,
        "warehouse": tbpr.warehouse,
    }
    for label, store in {**managed, "data store": tbpr.data, "runs store": tbpr.runs}.items():
        if store.is_relative_to(target) or (label in managed and target.is_relative_to(store)):
            raise TbprError(
                f"{option} {out} would write over TBPR_HOME's {label} ({store}); choose another folder"
            )
