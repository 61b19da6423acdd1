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
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipeval.atomic import atomic_write
from clipeval.cache import open_cache, run_cache
from clipeval.config.paths import cache_dir
from clipeval.errors import ClipevalError
from clipeval.report.inputs import accuracies, baseline_protocol, labels, numbers, read_csv, read_text, require_columns

log = logging.getLogger(__name__)

TESTBED_COMMIT = "0170eec658d664289d9f61de8f90f967f49abca0"
TESTBED_RAW = f"https://raw.githubusercontent.com/modestyachts/imagenet-testbed/{TESTBED_COMMIT}"
TESTBED_TABLE_SHA256 = "6b32665be2eef1594d6d296fcb07d33fed0dd4ecacacff463841d7cb08e835f7"


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A wide table of fractions indexed by model, from a wide or long CSV in percent or fractions.

    Wide: a ``model`` column and one column per setting; long: ``model``, ``setting``, ``accuracy``.
    ``columns``: the settings that are read (None: every column but ``model``); each must exist and hold
    numbers (an empty cell: no value). Percent when any of them exceeds 1. ClipevalError naming the file,
    the column and the row for anything else: an empty, binary or ragged file, a model twice, text where
    an accuracy belongs, an accuracy outside 0-100%.
    """
    path, frame = read_csv(path, "Baseline table")
    require_columns(frame, ["model"], str(path), "one row per model")
    if {"setting", "accuracy"} <= set(frame.columns):
        rows = labels(frame, ["model", "setting"], str(path))
        long = numbers(frame, ["accuracy"], str(path), rows)
        frame["accuracy"] = long["accuracy"].to_numpy()
        twice = frame.duplicated(["model", "setting"], keep=False)
        if twice.any():
            first = frame[twice].iloc[0]
            raise ClipevalError(f"{path}: model '{first['model']}' has setting '{first['setting']}' more than once.")
        wide = frame.pivot(index="model", columns="setting", values="accuracy")
        wide.columns.name = None
        if columns is not None:
            require_columns(wide, columns, f"Baseline table {path} (settings of its 'setting' column)")
        values = wide[list(columns) if columns is not None else list(wide.columns)]
    else:
        rows = labels(frame, ["model"], str(path))
        twice = rows.duplicated()
        if twice.any():
            raise ClipevalError(f"{path}: model '{rows[twice][0]}' has more than one row.")
        wanted = list(columns) if columns is not None else [c for c in frame.columns if c != "model"]
        require_columns(frame, wanted, f"Baseline table {path}")
        values = numbers(frame, wanted, str(path), rows)
    return accuracies(values, str(path))


def read_model_types(path: str | Path) -> pd.Series:
    """model -> type, from a ``model,model_type`` CSV or imagenet-testbed's ``plotting/model_types.py``.

    ClipevalError naming the file (and the row) when it holds no entries, lacks a column, has an
    empty cell, or gives one model two types.
    """
    if Path(path).suffix == ".py":
        path, text = read_text(path, "Model type list")
        pairs = re.findall(r"^\s*'([^']+)':\s*ModelTypes\.(\w+)", text, flags=re.MULTILINE)
        if not pairs:
            raise ClipevalError(
                f"Model type list {path} holds no entries of the form 'model_name': ModelTypes.TYPE "
                "(imagenet-testbed's plotting/model_types.py), so no model has a type."
            )
        types = pd.DataFrame(pairs, columns=["model", "model_type"])
    else:
        path, frame = read_csv(path, "Model type list")
        require_columns(frame, ["model", "model_type"], str(path), "a model,model_type CSV")
        models = labels(frame, ["model"], str(path))
        labels(frame, ["model_type"], str(path))
        types = pd.DataFrame({"model": models, "model_type": frame["model_type"].to_numpy()})
    types = types.drop_duplicates()
    twice = types["model"].duplicated(keep=False)
    if twice.any():
        model = types.loc[twice, "model"].iloc[0]
        found = sorted(types.loc[types["model"] == model, "model_type"])
        raise ClipevalError(f"{path}: model '{model}' has more than one type ({', '.join(found)}).")
    return pd.Series(types["model_type"].to_numpy(), index=pd.Index(types["model"], name="model"), name="model_type")


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
        spec = baseline_protocol(
            {"shifts": shifts, "include_types": include_types, "exclude_names": exclude_names, "label": label,
             "in_distribution": in_distribution},
            "The baselines' configuration",
        )  # fmt: skip
        self.shifts = spec["shifts"]
        self.in_distribution = spec.get("in_distribution", "val")
        table_path, types_path = _testbed_files(path, model_types, download)
        self.path = table_path
        columns = [self.in_distribution, *(c for s in self.shifts.values() for c in (s["x"], s["y"]))]
        self.table = read_table(table_path, list(dict.fromkeys(columns)))
        self.types = read_model_types(types_path) if types_path else None
        include = spec.get("include_types")
        self.include_types = list(include) if include and self.types is not None else None
        if self.include_types is not None and not self.types.isin(self.include_types).any():
            raise ClipevalError(
                f"No model in the model type list {types_path} has type {' or '.join(self.include_types)} "
                f"(its types: {', '.join(sorted(self.types.unique()))}): no baseline model is left. "
                "Types are case-sensitive; check include_types."
            )
        self.exclude_names = list(spec.get("exclude_names", []))
        self.label = spec.get("label", "baseline models")

    @staticmethod
    def shifts_with_points(options: Mapping[str, Any]) -> list[str] | None:
        """The shifts it has points for, configured with ``options``: its ``shifts``' (checked before a run)."""
        shifts = options.get("shifts")
        return [str(s) for s in shifts] if isinstance(shifts, Mapping) else None

    def models(self) -> pd.Index:
        keep = self.table.index
        if self.include_types is not None:
            keep = keep[keep.map(lambda m: self.types.get(m) in self.include_types)]
        return keep[[not any(frag in m for frag in self.exclude_names) for m in keep]]

    def _enough(self, points: pd.DataFrame, what: str, columns: str, min_x: float = 0.0) -> pd.DataFrame:
        """``points``, or ClipevalError when fewer than two models are left to fit a line through."""
        if len(points) >= 2:
            return points
        kept = [f"x >= {min_x:g}"] if min_x else []
        kept += [f"of type {' or '.join(self.include_types)}"] if self.include_types is not None else []
        kept += [f"names without {self.exclude_names}"] if self.exclude_names else []
        raise ClipevalError(
            f"{what}: {len(points)} model(s) of the baseline table {self.path} have values in {columns}"
            f"{' (' + ', '.join(kept) + ')' if kept else ''}; a logit-linear fit needs at least two."
        )

    def points(self, settings: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]:
        """{shift: DataFrame(index=model, columns=[id, shift])} of the models that define each line.

        Raises ClipevalError when fewer than two models are left for a shift."""
        out = {}
        rows = self.table.loc[self.models()]
        for shift, spec in self.shifts.items():
            pts = pd.DataFrame({"id": rows[spec["x"]], "shift": rows[spec["y"]]}).dropna()
            min_x = float(spec.get("min_x", 0.0))
            out[shift] = self._enough(pts[pts["id"] >= min_x], f"Shift '{shift}'", f"'{spec['x']}' and "
                                      f"'{spec['y']}'", min_x)  # fmt: skip
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
        rows = self.table.loc[self.models()]
        shift = rows[[self.shifts[n]["y"] for n in names]].mean(axis=1, skipna=False)
        points = pd.DataFrame({"id": rows[self.in_distribution], "shift": shift}).dropna()
        return self._enough(points, "The average over shifts", f"'{self.in_distribution}' and every shift's column")


#: the imagenet-testbed column of an ImageNet-C corruption and severity (top-1 in percent, the released files on disk)
TESTBED_CORRUPTION_COLUMN = "imagenet-c.{corruption}.{severity}_on-disk"


def testbed_corruption_errors(path: str | None = None, model: str = "alexnet", download: bool = False) -> dict:
    """A model's ImageNet-C top-1 errors from imagenet-testbed's table, as the mCE evaluator's ``baseline``:
    ``{corruption: [errors at severities 1..5], "clean": error on val, "label": "<model>-testbed"}`` (fractions).
    ClipevalError naming the table when the model or one of its values is missing."""
    from clipeval.data.corruptions import CORRUPTIONS, SEVERITIES

    table_path, _ = _testbed_files(path, None, download)
    columns = {
        (c, s): TESTBED_CORRUPTION_COLUMN.format(corruption=c, severity=s) for c in CORRUPTIONS for s in SEVERITIES
    }
    table = read_table(table_path, ["val", *columns.values()])
    if model not in table.index:
        raise ClipevalError(f"The baseline table {table_path} has no row '{model}' (model).")
    row = table.loc[model]
    empty = [col for col in ["val", *columns.values()] if not pd.notna(row[col])]
    if empty:
        raise ClipevalError(f"The baseline table {table_path} has no value for '{model}' in {empty[:5]}.")
    errors: dict = {c: [1 - float(row[columns[c, s]]) for s in SEVERITIES] for c in CORRUPTIONS}
    return errors | {"clean": 1 - float(row["val"]), "label": f"{model}-testbed"}


def _testbed_files(path: str | None, model_types: str | None, download: bool) -> tuple[Path, Path | None]:
    if path:
        return Path(path).expanduser(), Path(model_types).expanduser() if model_types else None
    root = run_cache().root if run_cache() is not None else cache_dir()  # in a run, its cache_dir=
    folder = root / "baselines" / "imagenet_testbed"
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
        table = _keep(root, table, _download(f"{TESTBED_RAW}/robustness_top1s.csv", TESTBED_TABLE_SHA256))
        types = _keep(root, types, _download(f"{TESTBED_RAW}/plotting/model_types.py", None))
    return table, types if types.is_file() else None


def _keep(root: Path, path: Path, data: bytes) -> Path:
    """``data`` written to ``path`` in the cache folder ``root``; when the cache cannot be written, its one
    warning (:meth:`TensorCache.write_failed`) and a file in a new temporary folder instead, for this process."""
    try:
        return atomic_write(path, lambda f: f.write(data))
    except OSError as exc:
        open_cache(root).write_failed(exc)
    kept = atomic_write(Path(tempfile.mkdtemp(prefix="clipeval-testbed-")) / path.name, lambda f: f.write(data))
    log.info("Keeping the downloaded %s in %s for this run", path.name, kept)
    return kept


def _download(url: str, sha256: str | None) -> bytes:
    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise ClipevalError(f"Could not download {url}: {exc}. Download it by hand and pass its path.") from exc
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise ClipevalError(f"{url} has sha256 {digest}, not the pinned {sha256}: refusing to use it.")
    return data
