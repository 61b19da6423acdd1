"""The files ``clipeval report`` reads besides results documents: one validating reader per kind.

Every reader raises :class:`~clipeval.errors.ClipevalError` (exit 2) naming the file and the
field (column, row, key) that is wrong, what is allowed, and the nearest valid name where there
is one; nothing malformed reaches the computation as a NaN or a KeyError. The kinds and their
readers:

==============================  =================================================  =====================================
kind                            reader                                             read by
==============================  =================================================  =====================================
results document, golden file   :class:`clipeval.results.store.ResultsDocument`     check, report store/figure/refit
                                (its ``robustness``: :func:`clipeval.report        (the store's entries: skipped with a
                                .selection.readable`)                              warning when unreadable)
accuracy table (baselines)      :func:`clipeval.report.baselines.read_table`       report testbed/refit/figure13/figure
                                                                                   --table, a suite's baselines.path
model types                     :func:`clipeval.report.baselines.read_model_types` --model-types, baselines.model_types
baselines protocol              :func:`baseline_protocol` (file:                   refit --protocol, the baselines config
                                :func:`clipeval.report.refit.read_protocol`)       (conf/baselines/testbed.yaml)
test-set sizes                  :func:`read_sizes`                                 report testbed --sizes
published table and its map     :func:`clipeval.report.cross_run.load_reference`   report figure --published
                                (map: :func:`published_mapping`)                   [--published-map]
the CLIP paper's table          :func:`clipeval.report.testbed.read_paper_table`   report figure13 --published
==============================  =================================================  =====================================

The low-level pieces here (:func:`read_csv`, :func:`require_columns`, :func:`accuracies`,
:func:`read_yaml_mapping`, and :func:`read_text` and :func:`read_json` from
:mod:`clipeval.results.files`) are what those readers share.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipeval.errors import ClipevalError, did_you_mean
from clipeval.results.files import read_json, read_text

# ---------------------------------------------------------------- text files


def read_csv(path: str | Path, what: str) -> tuple[Path, pd.DataFrame]:
    """(path, its rows as text): every cell a string, or NaN where empty (or NA, n/a, nan, ...).

    ClipevalError naming the file when it is empty, binary, not comma-separated CSV, has no rows or has a row
    with more or fewer fields than its header (naming the line and both counts).
    """
    path, text = read_text(path, what)
    if not text.strip():
        raise ClipevalError(f"{what} {path} is empty.")
    _check_row_lengths(text, f"{what} {path}")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise ClipevalError(f"{what} {path} is not a well-formed CSV table ({detail}).") from None
    if len(frame.columns) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in str(frame.columns[0]):
                raise ClipevalError(
                    f"{what} {path} has its columns separated by {name}: clipeval reads comma-separated CSV."
                )
    if frame.empty:
        raise ClipevalError(f"{what} {path} has a header but no rows.")
    return path, frame


def _check_row_lengths(text: str, where: str) -> None:
    """ClipevalError naming the line unless every row has as many fields as the header (a short row would shift
    its values into the wrong columns; pandas fills or re-indexes them without a word)."""
    try:
        rows = [(reader.line_num, row) for reader in [csv.reader(io.StringIO(text))] for row in reader if row]
    except csv.Error as exc:
        raise ClipevalError(f"{where} is not a well-formed CSV table ({exc}).") from None
    if not rows:
        return
    width = len(rows[0][1])
    for line, row in rows[1:]:
        if len(row) != width:
            raise ClipevalError(
                f"{where}: line {line} has {len(row)} fields, the header has {width}: every row needs one value "
                "per column (leave a cell empty rather than out; quote a value that holds a comma)."
            )


def require_columns(frame: pd.DataFrame, columns: Iterable[str], where: str, purpose: str = "") -> None:
    """ClipevalError naming the first of ``columns`` ``frame`` lacks, with the nearest column it has."""
    absent = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if absent:
        have = [str(c) for c in frame.columns]
        raise ClipevalError(
            f"{where} has no column(s) {absent}{f' ({purpose})' if purpose else ''}. "
            + did_you_mean(str(absent[0]), have)
        )


def labels(frame: pd.DataFrame, columns: Sequence[str], where: str) -> pd.Index:
    """Row labels from ``columns`` (joined by '/'): ClipevalError for an empty cell, naming its line."""
    cells = frame[list(columns)]
    empty = cells.isna().any(axis=1)
    if empty.any():
        line = int(empty.to_numpy().nonzero()[0][0]) + 2  # 1-based, after the header
        raise ClipevalError(f"{where}: line {line} has no {' / '.join(map(repr, columns))}: every row needs a name.")
    return pd.Index(cells.astype(str).agg("/".join, axis=1), name="model")


def numbers(frame: pd.DataFrame, columns: Sequence[str], where: str, rows: pd.Index) -> pd.DataFrame:
    """``columns`` of ``frame`` (text) as floats, indexed by ``rows``; an empty cell is NaN.

    ClipevalError naming the column, the row and the text of the first cell that is not a number, or
    that is infinite.
    """
    out = {}
    for column in columns:
        text = frame[column]
        values = pd.to_numeric(text, errors="coerce")
        bad = (text.notna() & values.isna()) | values.isin([math.inf, -math.inf])
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ClipevalError(
                f"{where}: column '{column}', row '{rows[i]}': {text.iloc[i]!r} is not a number "
                "(leave the cell empty where there is no value)."
            )
        out[column] = values.to_numpy(dtype=float)
    return pd.DataFrame(out, index=rows)


def accuracies(values: pd.DataFrame, where: str, percent: bool | None = None) -> pd.DataFrame:
    """Accuracies (from :func:`numbers`) as fractions: in percent when ``percent``, or (None) when any value
    exceeds 1. ClipevalError naming the column and row of a value outside 0-100% (or 0-1)."""
    if percent is None:
        percent = bool((values > 1).any().any())
        _check_one_scale(values, where) if percent else None
    top = 100.0 if percent else 1.0
    bad = (values < 0) | (values > top)
    if bad.any().any():
        column = bad.any().idxmax()
        row = bad[column].idxmax()
        raise ClipevalError(
            f"{where}: column '{column}', row '{row}': {values.loc[row, column]:g} is not an accuracy "
            f"({'in percent, 0-100' if percent else 'as a fraction, 0-1'}"
            f"{'; the table is read as percent because it has values above 1' if percent else ''})."
        )
    return values / 100.0 if percent else values


def _check_one_scale(values: pd.DataFrame, where: str) -> None:
    """ClipevalError when a table read as percent (it has values above 1) is mostly fractions: one percent value
    among fractions would otherwise silently divide every accuracy by 100."""
    stacked = values.stack()
    stacked = stacked[stacked > 0]
    small = stacked <= 1
    if len(stacked) and small.mean() > 0.5:
        (row, column), value = next(iter(stacked[~small].items()))
        raise ClipevalError(
            f"{where}: column '{column}', row '{row}': {value:g} is above 1, but {int(small.sum())} of the "
            f"{len(stacked)} accuracies are at most 1: the table mixes fractions and percent. Write every accuracy "
            "one way (all in percent, 0-100, or all as fractions, 0-1)."
        )


# ---------------------------------------------------------------- YAML and JSON


def read_yaml_mapping(path: str | Path, what: str) -> tuple[Path, dict[str, Any]]:
    """(path, the YAML mapping it holds, interpolations resolved); ClipevalError for invalid YAML or a non-mapping."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path, text = read_text(path, what)
    if not text.strip():
        raise ClipevalError(f"{what} {path} is empty.")
    try:
        data = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    except yaml.YAMLError as exc:
        raise ClipevalError(f"{what} {path} is not valid YAML ({' '.join(str(exc).split())}).") from None
    except OmegaConfBaseException as exc:
        raise ClipevalError(f"{what} {path} could not be read ({str(exc).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise ClipevalError(f"{what} {path} must be a mapping of keys to values, not a {type(data).__name__}.")
    return path, data


def check_keys(data: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str], where: str) -> None:
    """ClipevalError for a key not in ``allowed`` (with the nearest allowed one) or a ``required`` key absent."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise ClipevalError(f"{where}: unknown key '{key}'. {did_you_mean(str(key), allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ClipevalError(f"{where}: the key(s) {missing} are required (allowed keys: {', '.join(allowed)}).")


def text_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        hint = (
            " (YAML reads on/off/yes/no as booleans and bare numbers as numbers: quote them, e.g. 'on')"
            if isinstance(value, bool | int | float)
            else ""
        )
        raise ClipevalError(f"{where} must be a non-empty string, not {value!r}{hint}.")
    return value


def text_list(value: Any, where: str) -> list[str]:
    """A list of strings (a single string is refused: it would be read letter by letter)."""
    if not isinstance(value, list | tuple):
        raise ClipevalError(f"{where} must be a list of strings, e.g. [{value!r}], not {value!r}.")
    return [text_value(v, f"{where}[{i}]") for i, v in enumerate(value)]


def fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ClipevalError(f"{where} must be a fraction from 0 to 1 (0.55 for 55%), not {value!r}.")
    return float(value)


# ---------------------------------------------------------------- the kinds

PROTOCOL_KEYS = ("shifts", "include_types", "exclude_names", "label", "in_distribution")
SHIFT_KEYS = ("x", "y", "min_x")


def baseline_protocol(data: Mapping[str, Any], where: str, ignored: Iterable[str] = ()) -> dict[str, Any]:
    """A baselines protocol (the keys of conf/baselines/testbed.yaml), validated; keys in ``ignored`` dropped.

    ``shifts``: {name: {x: <in-distribution column>, y: <shift column>, min_x: <fraction>}} (at least one);
    ``include_types``: model types to keep (a list, or null: all); ``exclude_names``: name fragments to drop;
    ``label``, ``in_distribution``: strings.
    """
    ignored = list(ignored)
    check_keys(data, [*PROTOCOL_KEYS, *ignored], ["shifts"], where)
    shifts = data["shifts"]
    if not isinstance(shifts, Mapping) or not shifts:
        raise ClipevalError(
            f"{where}: 'shifts' must map each shift to {{x: <column>, y: <column>, min_x: <fraction>}}, not {shifts!r}."
        )
    out: dict[str, Any] = {"shifts": {}}
    for name, spec in shifts.items():
        at = f"{where}: shifts.{name}"
        if not isinstance(spec, Mapping):
            raise ClipevalError(f"{at} must be {{x: <column>, y: <column>, min_x: <fraction>}}, not {spec!r}.")
        check_keys(spec, SHIFT_KEYS, ["x", "y"], at)
        shift = {"x": text_value(spec["x"], f"{at}.x"), "y": text_value(spec["y"], f"{at}.y")}
        if spec.get("min_x") is not None:
            shift["min_x"] = fraction(spec["min_x"], f"{at}.min_x")
        out["shifts"][str(name)] = shift
    if data.get("include_types") is not None:
        out["include_types"] = text_list(data["include_types"], f"{where}: include_types")
    elif "include_types" in data:
        out["include_types"] = None
    if data.get("exclude_names") is not None:
        out["exclude_names"] = text_list(data["exclude_names"], f"{where}: exclude_names")
    for key in ("label", "in_distribution"):
        if data.get(key) is not None:
            out[key] = text_value(data[key], f"{where}: {key}")
    return out


MAPPING_KEYS = ("label", "model", "in_distribution", "shifts", "min_x")


def published_mapping(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A published table's mapping (conf/published/openclip.yaml), validated and normalised:
    ``model`` a list of column names, each shift ``{x: <column>, y: <column>}`` (x defaults to
    ``in_distribution``), ``paired`` {shift: whether it names its own x}, ``min_x`` a fraction."""
    check_keys(data, MAPPING_KEYS, ["label", "model", "in_distribution", "shifts"], where)
    model = data["model"]
    model = [text_value(model, f"{where}: model")] if not isinstance(model, list | tuple) else model
    out: dict[str, Any] = {
        "label": str(data["label"]),
        "model": text_list(model, f"{where}: model"),
        "in_distribution": text_value(data["in_distribution"], f"{where}: in_distribution"),
        "min_x": fraction(data.get("min_x", 0.0), f"{where}: min_x"),
        "shifts": {},
        "paired": {},
    }
    shifts = data["shifts"]
    if not isinstance(shifts, Mapping) or not shifts:
        raise ClipevalError(
            f"{where}: 'shifts' must map each shift to a column name or to {{x: <column>, y: <column>}}, "
            f"not {shifts!r}."
        )
    for name, spec in shifts.items():
        at = f"{where}: shifts.{name}"
        if isinstance(spec, Mapping):
            check_keys(spec, ("x", "y"), ["y"], at)
            x = text_value(spec["x"], f"{at}.x") if "x" in spec else out["in_distribution"]
            out["shifts"][str(name)] = {"x": x, "y": text_value(spec["y"], f"{at}.y")}
            out["paired"][str(name)] = "x" in spec
        else:
            out["shifts"][str(name)] = {"x": out["in_distribution"], "y": text_value(spec, at)}
            out["paired"][str(name)] = False
    return out


def read_sizes(path: str | Path) -> dict[str, int]:
    """Test-set sizes: a JSON object {setting: number of images}; keys starting with '_' are comments.

    ClipevalError naming the key whose value is not a positive whole number.
    """
    path, data = read_json(path, "Test-set sizes file")
    if not isinstance(data, dict):
        raise ClipevalError(f"{path} must be a JSON object {{setting: number of images}}, not a {type(data).__name__}.")
    sizes = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ClipevalError(f"{path}: '{key}' is {value!r}; a test-set size is a positive whole number of images.")
        sizes[key] = value
    return sizes
