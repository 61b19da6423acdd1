"""Baseline models that define the effective-robustness line, from a table of accuracies.

The table is wide (a ``model`` column and one column per evaluation setting) or long
(``model``, ``setting``, ``accuracy``); accuracies in percent (as imagenet-testbed's) or as
fractions. Which of its models define the line is configuration: model types to keep (from a
``model,model_type`` CSV), name fragments to drop, and a minimum in-distribution accuracy
per shift. The defaults are imagenet-testbed's protocol (../shared/data/README.md): STANDARD
models whose names contain neither ``aws`` nor ``batch64``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipeval.atomic import atomic_write
from clipeval.config.paths import cache_dir
from clipeval.errors import ClipevalError

log = logging.getLogger(__name__)

TESTBED_COMMIT = "0170eec658d664289d9f61de8f90f967f49abca0"
TESTBED_RAW = f"https://raw.githubusercontent.com/modestyachts/imagenet-testbed/{TESTBED_COMMIT}"
TESTBED_TABLE_SHA256 = "6b32665be2eef1594d6d296fcb07d33fed0dd4ecacacff463841d7cb08e835f7"


def read_table(path: str | Path) -> pd.DataFrame:
    """A wide table of fractions indexed by model, from a wide or long CSV in percent or fractions."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClipevalError(f"Baseline table {path} does not exist.")
    frame = pd.read_csv(path)
    if "model" not in frame.columns:
        raise ClipevalError(f"Baseline table {path} needs a 'model' column (columns: {list(frame.columns)[:8]}).")
    if {"setting", "accuracy"} <= set(frame.columns):
        frame = frame.pivot_table(index="model", columns="setting", values="accuracy", aggfunc="first")
    else:
        frame = frame.set_index("model")
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame / 100.0 if frame.max().max() > 1.0 else frame


def read_model_types(path: str | Path) -> pd.Series:
    """model -> type, from a ``model,model_type`` CSV or imagenet-testbed's ``plotting/model_types.py``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClipevalError(f"Model type list {path} does not exist.")
    if path.suffix == ".py":
        pairs = re.findall(r"^'([^']+)':\s*ModelTypes\.(\w+)", path.read_text(), flags=re.MULTILINE)
        return pd.Series(dict(pairs), name="model_type")
    return pd.read_csv(path).set_index("model")["model_type"]


class TableBaselines:
    """Baseline points per shift from a table; ``shifts`` maps each shift to its two columns.

    ``shifts``: ``{shift: {x: <in-distribution column>, y: <shift column>, min_x: <fraction>}}``;
    ``in_distribution`` is the column against which the average over shifts is drawn.
    """

    def __init__(
        self,
        shifts: Mapping[str, Mapping[str, Any]],
        path: str | None = None,
        model_types: str | None = None,
        include_types: Sequence[str] | None = ("STANDARD",),
        exclude_names: Sequence[str] = ("aws", "batch64"),
        download: bool = False,
        label: str = "baseline models",
        in_distribution: str = "val",
    ):
        self.shifts = {name: dict(spec) for name, spec in shifts.items()}
        table_path, types_path = _testbed_files(path, model_types, download)
        self.table = read_table(table_path)
        self.types = read_model_types(types_path) if types_path else None
        self.include_types = list(include_types) if include_types and self.types is not None else None
        self.exclude_names = list(exclude_names)
        self.label = label
        self.in_distribution = in_distribution

    def models(self) -> pd.Index:
        keep = self.table.index
        if self.include_types is not None:
            keep = keep[keep.map(lambda m: self.types.get(m) in self.include_types)]
        return keep[[not any(frag in m for frag in self.exclude_names) for m in keep]]

    def points(self, settings: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]:
        """{shift: DataFrame(index=model, columns=[id, shift])} of the models that define each line."""
        out = {}
        rows = self.table.loc[self.models()]
        for shift, spec in self.shifts.items():
            for column in (spec["x"], spec["y"]):
                if column not in self.table.columns:
                    raise ClipevalError(f"Baseline table has no column '{column}' (for shift '{shift}').")
            pts = pd.DataFrame({"id": rows[spec["x"]], "shift": rows[spec["y"]]}).dropna()
            out[shift] = pts[pts["id"] >= float(spec.get("min_x", 0.0))]
        return out

    def average_points(self, settings: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """DataFrame(index=model, columns=[id, shift]): x = the ``in_distribution`` column, y = the mean over
        the shifts named in ``settings`` (all of ``shifts`` when None), for the models that have them all.

        Raises ClipevalError for a shift name these baselines do not define.
        """
        names = [n for n in settings if n != "in_distribution"] if settings is not None else list(self.shifts)
        unknown = [n for n in names if n not in self.shifts]
        if unknown:
            raise ClipevalError(f"The baselines have no shift(s) {unknown} (they have {sorted(self.shifts)}).")
        absent = [c for c in (self.in_distribution, *(self.shifts[n]["y"] for n in names)) if c not in self.table]
        if absent:
            raise ClipevalError(
                f"Baseline table has no column(s) {absent} (for the average over shifts; its in-distribution "
                f"column is '{self.in_distribution}')."
            )
        rows = self.table.loc[self.models()]
        shift = rows[[self.shifts[n]["y"] for n in names]].mean(axis=1, skipna=False)
        return pd.DataFrame({"id": rows[self.in_distribution], "shift": shift}).dropna()


def _testbed_files(path: str | None, model_types: str | None, download: bool) -> tuple[Path, Path | None]:
    if path:
        return Path(path).expanduser(), Path(model_types).expanduser() if model_types else None
    folder = cache_dir() / "baselines" / "imagenet_testbed"
    table, types = folder / "robustness_top1s.csv", folder / "model_types.py"
    if not table.is_file():
        if not download:
            raise ClipevalError(
                "No baseline table: pass the imagenet-testbed results table as baselines.path=.../robustness_top1s.csv "
                "with baselines.model_types=... (in a suite: suite.robustness.baselines.path=...), "
                "or allow a one-time download of it from the public repository "
                f"(modestyachts/imagenet-testbed @ {TESTBED_COMMIT[:7]}, MIT licence) with baselines.download=true. "
                f"It would be kept in {folder}."
            )
        _download(f"{TESTBED_RAW}/robustness_top1s.csv", table, TESTBED_TABLE_SHA256)
        _download(f"{TESTBED_RAW}/plotting/model_types.py", types, None)
    return table, types if types.is_file() else None


def _download(url: str, path: Path, sha256: str | None) -> None:
    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise ClipevalError(f"Could not download {url}: {exc}. Download it by hand and pass its path.") from exc
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise ClipevalError(f"{url} has sha256 {digest}, not the pinned {sha256}: refusing to use it.")
    atomic_write(path, lambda f: f.write(data))
