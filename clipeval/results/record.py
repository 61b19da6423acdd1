"""Result records, the run's results.json, and the shared results store.

The store is a folder with one JSON file per run. Parallel runs (a Hydra multirun on
several processes or nodes) each write their own file through an atomic rename, so no
run can lose or corrupt another's records and no lock is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import clipeval
from clipeval.atomic import atomic_write


@dataclass(frozen=True)
class Record:
    dataset: str
    metric: str
    value: float  # a fraction in [0, 1]
    n: int
    ci: tuple[float, float]
    ci_method: str = "clopper-pearson"
    std: float | None = None  # spread over repeats (few-shot seeds), when the value is their mean

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = [float(self.ci[0]), float(self.ci[1])]
        if self.std is None:
            del out["std"]
        return out


def scored_data_key(source_key: str, limit: int | None) -> str:
    """The content key of the samples a run scored from a source (results.json ``data``).

    ``source_key``: the source's ``key`` (a hash of the data's content, see clipeval.data);
    ``limit``: ``runtime.limit`` (only the first N samples scored), None for all. Equal keys mean
    the same content and the same samples of it; ``clipeval check compare`` refuses different ones.
    """
    return source_key if limit is None else f"{source_key}|limit={int(limit)}"


def write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def results_document(
    *,
    model: Any,
    task: Any,
    records: list[Record],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "clipeval_version": clipeval.__version__,
        "model": {"name": model.name, "fingerprint": model.fingerprint},
        "task": {"name": task.name, "version": task.version},
        "records": [r.to_json() for r in records],
        "config": config,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        **(extra or {}),
    }


def add_to_store(store: Path, document: dict[str, Any]) -> Path:
    stamp = document["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    name = f"{stamp}_{document['task']['name']}_{document['model']['name']}_{uuid.uuid4().hex[:8]}.json"
    path = Path(store) / _safe(name)
    write_json(path, document)
    return path


def load_store(store: Path) -> list[dict[str, Any]]:
    """Every run in the store, oldest first."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(store).glob("*.json"))]
    return sorted(runs, key=lambda r: r["created"])


def git_sha() -> str | None:
    """The commit of the clipeval source tree, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(clipeval.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
