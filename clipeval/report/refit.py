"""Re-fit a stored run's effective robustness against another baseline table, without running the model.

A suite's results document stores the settings its report is computed on (which records make the
in-distribution setting and each shift) and its zero-shot top-1 records; only the baselines'
points are replaced: :meth:`RobustnessSpec.with_baselines` takes them from a table
(:class:`~clipeval.report.baselines.TableBaselines`) and :func:`build_report` computes the
report again.

Which table columns serve each shift is a *protocol*: a YAML file with the keys of
``conf/baselines/testbed.yaml`` (``shifts: {name: {x, y, min_x}}``, ``include_types``,
``exclude_names``, ``label``, ``in_distribution``); its ``path``, ``model_types`` and
``download`` keys are ignored (the table is given on the command line). Without one, the
testbed protocol applies. ``--shift NAME=X:Y[:MIN_X]`` (repeatable) replaces the protocol's
shifts: shift NAME (as the run's suite names it) is fitted on column X (baselines'
in-distribution top-1, on the shift's classes where it has its own) against column Y, keeping
models with X >= MIN_X (a fraction).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipeval.config.paths import conf_dir
from clipeval.errors import ClipevalError
from clipeval.report.baselines import TableBaselines
from clipeval.report.inputs import baseline_protocol, read_yaml_mapping
from clipeval.report.robustness import RobustnessReport, build_report
from clipeval.report.run_summary import stored_spec
from clipeval.results.robustness import RobustnessSpec
from clipeval.results.store import ResultsDocument

DEFAULT_PROTOCOL = conf_dir() / "baselines" / "testbed.yaml"
PROTOCOL_KEYS = {"shifts", "include_types", "exclude_names", "label", "in_distribution"}
IGNORED_KEYS = {"_target_", "path", "model_types", "download"}


def parse_shift(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=X:Y[:MIN_X]`` -> (NAME, {x, y[, min_x]}); ClipevalError naming the option when malformed."""
    name, sep, columns = text.partition("=")
    parts = columns.split(":")
    if not sep or not name or len(parts) not in (2, 3) or not all(parts[:2]):
        raise ClipevalError(
            f"--shift {text!r}: expected NAME=X_COLUMN:Y_COLUMN[:MIN_X], e.g. renditions=test:renditions."
        )
    spec: dict[str, Any] = {"x": parts[0], "y": parts[1]}
    if len(parts) == 3:
        try:
            spec["min_x"] = float(parts[2])
        except ValueError:
            raise ClipevalError(f"--shift {text!r}: MIN_X {parts[2]!r} is not a number.") from None
        if not 0 <= spec["min_x"] <= 1:
            raise ClipevalError(f"--shift {text!r}: MIN_X is a fraction in [0, 1] (0.55 for 55%), not {parts[2]}.")
    return name, spec


def read_protocol(path: Path | None) -> dict[str, Any]:
    """The protocol YAML (default: conf/baselines/testbed.yaml), validated
    (:func:`clipeval.report.inputs.baseline_protocol`), as a dict of :data:`PROTOCOL_KEYS`."""
    path, data = read_yaml_mapping(path if path is not None else DEFAULT_PROTOCOL, "Baselines protocol")
    spec = baseline_protocol(data, str(path), ignored=IGNORED_KEYS)
    return {k: v for k, v in spec.items() if k in PROTOCOL_KEYS}


def table_baselines(
    table: Path,
    model_types: Path | None = None,
    protocol: Path | None = None,
    shifts: Sequence[str] = (),
    label: str | None = None,
    in_distribution: str | None = None,
    run_shifts: Sequence[str] | None = None,
) -> TableBaselines:
    """Baselines from ``table``: under ``protocol`` (a YAML; default, when no ``shifts`` are given, the
    testbed's), its shifts replaced by ``shifts`` (``NAME=X:Y[:MIN_X]``). With ``shifts`` and no protocol, every
    model of the table is a baseline (only STANDARD ones when ``model_types`` is given). ``in_distribution``:
    the column the average over shifts is drawn against (default: the protocol's, else ``val``). ``run_shifts``:
    the shifts of the run to re-fit, checked against the protocol's before the table is read."""
    spec = read_protocol(protocol) if protocol is not None or not shifts else {}
    if shifts:
        spec["shifts"] = dict(parse_shift(s) for s in shifts)
    if in_distribution:
        spec["in_distribution"] = in_distribution
    if run_shifts is not None:
        _check_shifts(run_shifts, spec["shifts"])
    kwargs = {k: spec[k] for k in ("include_types", "exclude_names", "in_distribution") if k in spec}
    kwargs.setdefault("exclude_names", [])
    return TableBaselines(
        shifts=spec["shifts"],
        path=str(table),
        model_types=str(model_types) if model_types else None,
        label=label or spec.get("label") or f"baseline models of {Path(table).name}",
        **kwargs,
    )


def refit(doc: ResultsDocument, baselines: Any) -> RobustnessReport:
    """The stored run's effective robustness against ``baselines`` (a provider with ``points``), from its records.

    Raises ClipevalError when the document has no robustness settings or the baselines lack one of its shifts.
    """
    spec = stored_spec(doc)
    if spec is None:
        why = "it failed" if doc.failures or doc.raw.get("effective_robustness_error") else "it is not a suite's run"
        raise ClipevalError(f"{doc.where} has no effective-robustness settings to re-fit ({why}).")
    return build_report(refit_spec(spec, baselines), doc.records)


def refit_spec(spec: RobustnessSpec, baselines: Any) -> RobustnessSpec:
    """``spec``'s settings against ``baselines``' points; ClipevalError when they lack one of its shifts."""
    _check_shifts(spec.shifts, getattr(baselines, "shifts", {}) or {})
    return spec.with_baselines(baselines)


def _check_shifts(needed: Iterable[str], have: Iterable[str]) -> None:
    needed, have = sorted(needed), sorted(have)
    if have and set(needed) - set(have):
        raise ClipevalError(
            f"The run's shifts are {needed}; the baselines define {have}. Map each of the run's shifts to two "
            "columns of the table with --shift NAME=X:Y[:MIN_X] (or a --protocol YAML)."
        )
