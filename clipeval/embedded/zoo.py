"""Supervised baselines for the embedded suite: a zoo of classifiers trained on the digits.

Effective robustness needs the line that standard supervised models trace between
in-distribution and shifted accuracy. Here that line comes from 18 classifiers of five
families and many capacities and training lengths, all trained on the suite's train split
(raw pixels) and evaluated on exactly the images the dual encoder sees.

The table is computed on first use (about 20 seconds on 2 cores) and cached, keyed by the
content of every dataset and the zoo's version; it is never committed, so it can never
disagree with the data the current code generates. ``python -m clipeval.embedded.zoo``
prints it as CSV.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from clipeval.cache import cache_key, open_cache
from clipeval.config.paths import cache_dir as resolve_cache_dir
from clipeval.embedded import digits
from clipeval.embedded.source import DigitsSource
from clipeval.errors import ClipevalError

log = logging.getLogger(__name__)

ZOO_VERSION = 2  # 2: trained on one thread (the table no longer depends on the core count)


def _sklearn(
    factory: Callable[[], object],
) -> Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    def fit(x: np.ndarray, y: np.ndarray):
        model = factory()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # short training runs are meant not to converge
            model.fit(x.reshape(len(x), -1), y)
        return lambda z: model.predict(z.reshape(len(z), -1))

    return fit


def _cnn(width: int, epochs: int, seed: int = 0):
    def fit(x: np.ndarray, y: np.ndarray):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, 10),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.tensor(x[:, None]), torch.tensor(y)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(yt), generator=gen).split(64):
                loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()

        def predict(z: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.tensor(z[:, None])).argmax(1).numpy()

        return predict

    return fit


def members() -> dict[str, tuple[str, Callable]]:
    """name -> (family, fit(x, y) -> predict)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    zoo: dict[str, tuple[str, Callable]] = {}
    for c in (0.0003, 0.001, 0.01, 0.1, 1.0):
        zoo[f"logreg_C{c:g}"] = (
            "logistic regression",
            _sklearn(lambda c=c: LogisticRegression(C=c, max_iter=3000)),
        )
    for hidden, iters in (((16,), 300), ((64,), 300), ((128, 64), 300), ((64,), 5), ((64,), 25)):
        name = f"mlp_{'x'.join(map(str, hidden))}_it{iters}"
        zoo[name] = (
            "MLP",
            _sklearn(lambda h=hidden, i=iters: MLPClassifier(h, max_iter=i, random_state=0)),
        )
    for k in (1, 9):
        zoo[f"knn_k{k}"] = ("k-nearest neighbours", _sklearn(lambda k=k: KNeighborsClassifier(k)))
    for c in (0.3, 10.0):
        zoo[f"svm_rbf_C{c:g}"] = ("SVM", _sklearn(lambda c=c: SVC(C=c)))
    zoo["random_forest"] = (
        "random forest",
        _sklearn(lambda: RandomForestClassifier(100, random_state=0)),
    )
    for width, epochs in ((4, 3), (8, 10), (16, 20), (32, 40)):
        zoo[f"cnn_w{width}_ep{epochs}"] = ("CNN", _cnn(width, epochs))
    return zoo


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch, BLAS and OpenMP (scikit-learn's neighbours and SVMs) on one thread inside: the baselines then
    come out the same on any machine (another thread count sums in another order, which moved a CNN's and
    a k-NN's accuracy in the 4th digit), and faster than two threads for models this small."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def compute_table(settings: dict[str, list[DigitsSource]], train: DigitsSource) -> pd.DataFrame:
    """Accuracy (fraction) of every zoo member on every setting, pooled over its datasets; trained and scored
    on one thread (:func:`one_thread`), so the table does not depend on the machine's core count."""
    x, y = train.images / digits.MAX_INK, train.labels
    rows = {}
    for name, (family, fit) in members().items():
        with one_thread():
            predict = fit(x, y)
        row: dict[str, object] = {"family": family}
        for setting, sources in settings.items():
            with one_thread():
                correct = sum(int((predict(s.images / digits.MAX_INK) == s.labels).sum()) for s in sources)
            row[setting] = correct / sum(len(s) for s in sources)
        rows[name] = row
        log.debug(
            "baseline %-20s %s",
            name,
            "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "family"),
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


class DigitsZoo:
    """Baselines for the suite: the zoo's table, from the cache or trained now."""

    def __init__(self, cache: bool = True, cache_dir: str | None = None):
        self.cache = open_cache(resolve_cache_dir(cache_dir), enabled=bool(cache))  # in a run, the run's cache
        self._tables: dict[str, pd.DataFrame] = {}

    label = "19 supervised classifiers trained on the digits (clipeval.embedded.zoo)"

    def points(self, settings: dict[str, list] | None = None) -> dict[str, pd.DataFrame]:
        """{shift: DataFrame(index=model, columns=[id, shift])}; ``settings`` holds ``in_distribution``.

        Raises ClipevalError without settings: the zoo scores its models on the suite's own datasets.
        """
        table = self.accuracies(settings)
        return {
            name: pd.DataFrame({"id": table["in_distribution"], "shift": table[name]})
            for name in settings
            if name != "in_distribution"
        }

    def average_points(self, settings: dict[str, list] | None = None) -> pd.DataFrame:
        """DataFrame(index=model, columns=[id, shift]) with shift = the mean accuracy over all shifts."""
        table = self.accuracies(settings)
        shifts = [name for name in settings if name != "in_distribution"]
        return pd.DataFrame({"id": table["in_distribution"], "shift": table[shifts].mean(axis=1)})

    def accuracies(self, settings: dict[str, list] | None) -> pd.DataFrame:
        if settings is None:
            raise ClipevalError(
                "The digits zoo scores its classifiers on the suite's own datasets, so it needs the suite's "
                "settings (in_distribution and each shift, with their sources); it has no fixed table to give."
            )
        train = DigitsSource(split="train")
        key = cache_key(
            kind="digits_zoo",
            version=ZOO_VERSION,
            train=train.key,
            settings={k: [s.key for s in v] for k, v in settings.items()},
        )
        if key in self._tables:
            return self._tables[key]
        self._tables[key] = self._table(key, settings, train)
        return self._tables[key]

    def _table(self, key: str, settings: dict[str, list], train: DigitsSource) -> pd.DataFrame:
        entry = self.cache.load("baselines", key)
        if entry is not None:
            log.info("Baseline zoo: cache hit (%d models)", len(entry["table"]["model"]))
            return pd.DataFrame(entry["table"]).set_index("model")
        log.info(
            "Baseline zoo: training %d supervised classifiers on the digits (first run only)",
            len(members()),
        )
        start = time.perf_counter()
        table = compute_table(settings, train)
        log.info("Baseline zoo: trained %d classifiers in %.1f s", len(table), time.perf_counter() - start)
        self.cache.save("baselines", key, {"table": table.reset_index().to_dict(orient="list")})
        return table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = {
        "in_distribution": [DigitsSource(split="test")],
        "renditions": [DigitsSource("renditions")],
        "sketch": [DigitsSource("sketch")],
        "rotated": [DigitsSource("rotated")],
        "corruptions": [DigitsSource(c, severity=s) for c in digits.CORRUPTIONS for s in digits.SEVERITIES],
    }
    print(DigitsZoo().accuracies(settings).to_csv(float_format="%.4f"))


if __name__ == "__main__":
    main()
