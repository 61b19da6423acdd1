"""A new evaluator kind is one new file plus its task YAML: two files, no edit anywhere else.

The files, written by the test as a user would write them:

1. ``plugins/nearest_class_mean.py``: the evaluator, a class with ``evaluate(ctx) -> list[Record]``
   (clipeval.contracts.Evaluator) that reads features through the context, keeps its
   predictions through it, and returns its record;
2. ``tasks/digits_ncm/task.yaml``: the task that names the data and the evaluator's ``_target_``.

With ``CLIPEVAL_TASKS`` pointing at ``tasks/`` and ``plugins/`` on the Python path, ``task=digits_ncm``
runs it through the real runner (Hydra compose, feature bank, results document, store).
"""

from __future__ import annotations

import sys
import textwrap

import pytest
from conftest import run_in_process

from clipeval.results.store import ResultsDocument, load_store

EVALUATOR = '''
    """Nearest class mean: each class is the mean image feature of its samples in a seeded half of
    the dataset; the other half is scored by its nearest class mean (cosine)."""

    import numpy as np
    import torch

    from clipeval.results.metrics import clopper_pearson
    from clipeval.results.record import Record


    class NearestClassMean:
        def __init__(self, dataset: str, seed: int = 0):
            self.dataset, self.seed = dataset, seed

        def evaluate(self, ctx) -> list[Record]:
            fs = ctx.features(self.dataset)
            order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(fs.ids)))
            fit, scored = order[: len(order) // 2], order[len(order) // 2 :].sort().values
            classes = fs.labels[fit].unique()
            means = torch.stack([fs.features[fit][fs.labels[fit] == c].mean(0) for c in classes])
            predicted = classes[(fs.features[scored] @ means.T).argmax(1)]
            labels, ids = fs.labels[scored], [fs.ids[i] for i in scored.tolist()]
            key = ctx.keep_predictions(self.dataset, ids, labels, predicted[:, None], name=f"{self.dataset}.ncm")
            k, n = int((predicted == labels).sum()), len(ids)
            params = {"classifier": "nearest-class-mean", "fit": "half", "seed": self.seed}
            return [Record(self.dataset, "top1", k / n, n, clopper_pearson(k, n), params=params, samples=key)]
'''

TASK = """
    name: digits_ncm
    version: 1
    datasets:
      test: {_target_: clipeval.embedded.source.DigitsSource, split: test}
    evaluators:
      ncm: {_target_: nearest_class_mean.NearestClassMean, dataset: test}
"""


def test_a_new_evaluator_is_one_file_plus_its_task_yaml(tmp_path, monkeypatch):
    user = tmp_path / "user"
    (user / "plugins").mkdir(parents=True)
    (user / "plugins" / "nearest_class_mean.py").write_text(textwrap.dedent(EVALUATOR))
    (user / "tasks" / "digits_ncm").mkdir(parents=True)
    (user / "tasks" / "digits_ncm" / "task.yaml").write_text(textwrap.dedent(TASK))
    written = sorted(str(p.relative_to(user)) for p in user.rglob("*") if p.is_file())
    assert written == ["plugins/nearest_class_mean.py", "tasks/digits_ncm/task.yaml"]  # the two files
    monkeypatch.setenv("CLIPEVAL_TASKS", str(user / "tasks"))
    monkeypatch.syspath_prepend(str(user / "plugins"))
    try:
        doc = run_in_process(["task=digits_ncm"], tmp_path / "run")
    finally:
        sys.modules.pop("nearest_class_mean", None)

    assert doc["selection"] == {"name": "digits_ncm", "version": "1", "kind": "task", "tasks": {"digits_ncm": "1"}}
    (record,) = ResultsDocument.parse(doc).records
    assert (record.task, record.dataset, record.metric) == ("digits_ncm", "test", "top1")
    assert record.params == {"classifier": "nearest-class-mean", "fit": "half", "seed": 0}
    assert record.n == 180 and record.value > 0.5  # half of the 360 test digits; chance is 0.1
    # the store holds the same document, with the per-sample predictions behind the record
    (stored,) = load_store(tmp_path / "store")
    assert stored.raw["records"] == doc["records"] and stored.records == [record]
    samples = stored.samples(record.samples)
    assert samples.n == 180 and samples.value("top1") == pytest.approx(record.value)
    assert (tmp_path / "run" / "predictions" / "digits_ncm" / "test.ncm.parquet").is_file()
