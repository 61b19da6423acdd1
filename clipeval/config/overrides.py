"""Reading the command line's Hydra overrides before Hydra composes anything.

Two rules live here: an unknown option of a config group gets the list of options and a
suggestion (exit 2), and a chosen task runs alone: ``task=<name>`` composes that task and no
suite, so the composed config (kept in results.json) holds exactly what runs.
"""

from __future__ import annotations

import difflib

from hydra.core.override_parser.overrides_parser import OverridesParser

from clipeval.config import registry
from clipeval.errors import ClipevalError, did_you_mean

# Hydra flags that take a value as the next argument.
_FLAGS_WITH_VALUE = {
    "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i", "--cfg", "-c",
    "--package", "-p", "--experimental-rerun",
}  # fmt: skip


def check_command(argv: list[str], commands: tuple[str, ...]) -> None:
    """Refuse a first argument that is a bare word but none of ``commands`` (``clipeval reprt store``).

    Overrides have ``=`` (``key=value``) or start with ``~``/``+``, and flags with ``-``; a bare
    word in first place is a command. A dotted key without ``=`` is left to Hydra (a malformed override).
    """
    first = argv[0] if argv else ""
    if not first.replace("_", "a").replace("-", "a").isalnum() or not first[0].isalpha() or first in commands:
        return
    usage = f"Commands: {', '.join(commands)} (clipeval <command> --help); a run takes key=value overrides (clipeval --help)."
    if first in registry.groups():
        raise ClipevalError(f"'{first}' is not a command: to choose a {first}, write {first}=<name>. {usage}")
    choices = [f"{group}={first}" for group in registry.chosen_groups() if first in registry.options(group)]
    if choices:
        raise ClipevalError(f"'{first}' is not a command: to choose it, write {' or '.join(choices)}. {usage}")
    close = difflib.get_close_matches(first, commands, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise ClipevalError(f"unknown command '{first}'{hint} {usage}")


def group_choices(argv: list[str]) -> dict[str, list[str | None]]:
    """{config group: the options chosen for it (several in a sweep; None for ``group=null``)} of ``argv``.

    Deletions (``~group``) and malformed overrides are left out (Hydra explains the latter well).
    """
    groups = set(registry.groups())
    chosen: dict[str, list[str | None]] = {}
    skip_next = False
    for arg in argv:
        if skip_next or arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE and not skip_next
            continue
        try:
            override = OverridesParser.create().parse_overrides([arg])[0]
        except Exception:  # leave malformed overrides to Hydra
            continue
        if override.key_or_group in groups and not override.is_delete():
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            chosen[override.key_or_group] = [None if v is None else str(v) for v in values]
    return chosen


def check_group_choices(argv: list[str]) -> None:
    """Raise ClipevalError for an unknown option of a config group."""
    if any(a in ("--help", "-h", "--hydra-help") for a in argv):
        return
    for group, values in group_choices(argv).items():
        available = registry.options(group)
        for value in values:
            if value is not None and value not in available:
                raise ClipevalError(f"Unknown {group} '{value}'. {did_you_mean(value, available)}")


def selection_overrides(argv: list[str]) -> list[str]:
    """``argv`` with ``~suite`` first when a task is chosen, so that only the task is composed.

    Raises ClipevalError when both a task and a suite are chosen: a run evaluates one or the other.
    """
    argv = ["~suite" if a == "suite=null" else a for a in argv]  # Hydra takes no null for a group's default
    chosen = group_choices(argv)
    task = [v for v in chosen.get("task", []) if v is not None]
    suite = [v for v in chosen.get("suite", []) if v is not None]
    if task and suite:
        raise ClipevalError(
            f"Both task={','.join(task)} and suite={','.join(suite)} are chosen: a run evaluates one task or one "
            "suite. Drop one of them (a suite's tasks are listed in conf/suite/<name>.yaml)."
        )
    suite_keys = [a for a in argv if a.lstrip("~+").startswith("suite.")]
    if task and suite_keys:
        raise ClipevalError(
            f"task={','.join(task)} is chosen, which runs that task alone, but {' '.join(suite_keys)} sets a suite's "
            "keys: a run evaluates one task or one suite. Drop the suite keys, or choose the suite instead of the task."
        )
    if task and "~suite" not in argv:
        first = _first_override(argv)  # Hydra takes its overrides as one positional run: join it
        return [*argv[:first], "~suite", *argv[first:]]
    return argv


def override_args(argv: list[str]) -> list[str]:
    """The overrides of ``argv``: neither flags nor a flag's value (``--cfg job``)."""
    skip_next = False
    out = []
    for arg in argv:
        if skip_next or arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE and not skip_next
            continue
        out.append(arg)
    return out


def _first_override(argv: list[str]) -> int:
    """The index of the first override in ``argv`` (not a flag, nor a flag's value)."""
    skip_next = False
    for i, arg in enumerate(argv):
        if skip_next or arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE and not skip_next
            continue
        return i
    return len(argv)


def check_no_op_overrides(cfg, overrides: list[str]) -> None:
    """ClipevalError for an override that sets a mapping to ``{}`` where the composed config ``cfg`` holds a
    non-empty one (``task.evaluators={}``): Hydra merges a mapping into the one there, so ``{}`` changes nothing
    and the run would go on with every entry. Says how to drop entries instead."""
    from omegaconf import DictConfig, OmegaConf

    groups = set(registry.groups())
    for arg in overrides:
        try:
            override = OverridesParser.create().parse_overrides([arg])[0]
        except Exception:  # noqa: BLE001 (Hydra explains a malformed override)
            continue
        key = override.key_or_group
        if override.is_delete() or key in groups or override.is_sweep_override():
            continue
        value = override.value()
        if not (isinstance(value, dict) and not value):
            continue
        node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(node, DictConfig) and len(node):
            entries = [str(k) for k in node]
            first = entries[0]
            raise ClipevalError(
                f"{key}={{}} changes nothing: Hydra merges a mapping into the one already there, so {key} keeps "
                f"{', '.join(entries)}. To drop an entry, delete it: ~{key}.{first}"
                + (f" (or {key}.{first}=null); a task needs at least one." if key.endswith("evaluators") else ".")
            )
