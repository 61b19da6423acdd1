"""open_clip's 38-dataset benchmark: task folders reading the webdataset mirrors, each dataset's main metric, the
suite's average over datasets, the new metrics (worst group, macro F1) and the published golden files.

One real run (two datasets generated in the mirror layout under a data root, the other 36 absent) covers the tasks,
the suite, the missing datasets and the printed table; the other tasks are checked by composition.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from association_data import write_winogavil
from caption_data import caption_set, write_wds
from conftest import (
    PUBLISHED,
    compose_config,
    exit_2,
    make_wds,
    open_clip_overrides,
    run_in_process,
    synthetic_image,
)

from clipeval.config.construct import check_targets
from clipeval.config.paths import builtin_tasks_dir, conf_dir
from clipeval.config.schema import SuiteConfig, validate_config
from clipeval.errors import ClipevalError
from clipeval.evaluators.groups import bootstrap_interval, macro_f1, worst_group
from clipeval.results.benchmark import BenchmarkSpec, Entry, benchmark_result
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import METRICS, Record

SUITE_FILE = conf_dir() / "suite" / "openclip_benchmark.yaml"
SUITE = yaml.safe_load(SUITE_FILE.read_text())
ENTRIES = SUITE["benchmark"]["datasets"]
TASKS = [e for e in ENTRIES.values() if isinstance(e, str)]
UNAVAILABLE = {name: e for name, e in ENTRIES.items() if isinstance(e, dict)}
OPENCLIP_CSV = PUBLISHED / "openclip_results.csv"
GOLDEN = sorted((Path(__file__).parents[1] / "reports" / "golden").glob("openclip_benchmark_*.json"))

#: each column's main metric as datacomp names it (mlfoundations/datacomp@4afedc4 tasklist.yml: main_metric, acc1
#: when absent), and clipeval's name for it
DATACOMP_TO_CLIPEVAL = {"acc1": "top1", "mean_per_class_recall": "mean_per_class_recall", "F1-macro_all": "macro_f1",
                        "acc_worst_region": "worst_group_top1", "acc_wg": "worst_group_top1",
                        "acc_top5_wg": "worst_group_top5", "mean_recall@1": "mean_recall@1"}  # fmt: skip
DATACOMP_MAIN = {"Caltech-101": "mean_per_class_recall", "FGVC Aircraft": "mean_per_class_recall",
                 "Oxford Flowers-102": "mean_per_class_recall", "Oxford-IIIT Pet": "mean_per_class_recall",
                 "Flickr": "mean_recall@1", "MSCOCO": "mean_recall@1", "WinoGAViL": "jaccard_score_10-12",
                 "iWildCam": "F1-macro_all", "FMoW": "acc_worst_region", "Dollar Street": "acc_top5_wg",
                 "GeoDE": "acc_wg"}  # fmt: skip


def task_yaml(name: str) -> dict:
    return yaml.safe_load((builtin_tasks_dir() / name / "task.yaml").read_text())


# ---------------------------------------------------------------- the configuration


def test_the_suite_names_the_38_columns_of_open_clips_table_in_its_order():
    assert len(ENTRIES) == 38 and len(TASKS) == 38
    assert not UNAVAILABLE  # every dataset has its task (WinoGAViL was the last)
    if OPENCLIP_CSV.is_file():
        header = next(csv.reader(OPENCLIP_CSV.open()))
        assert list(ENTRIES) == header[header.index("Average perf. on 38 datasets") + 1 :]


@pytest.mark.parametrize("column", sorted(ENTRIES))
def test_each_dataset_declares_datacomps_main_metric(column):
    entry = ENTRIES[column]
    declared = entry["metric"] if isinstance(entry, dict) else task_yaml(entry)["main_metric"]
    assert declared == DATACOMP_TO_CLIPEVAL.get(DATACOMP_MAIN.get(column, "acc1"), declared)
    if isinstance(entry, str):
        assert declared in METRICS


RETRIEVAL = ["flickr30k", "mscoco"]  # tests/test_retrieval.py runs them on each of their layouts
HUB_FILES = ["winogavil"]  # tests/test_winogavil.py reads its hub files, zipped and unpacked


@pytest.mark.parametrize("task", [t for t in TASKS if t not in RETRIEVAL + HUB_FILES])
def test_every_benchmark_task_composes_and_reads_its_mirror_under_the_data_root(task):
    cfg = compose_config([f"task={task}", "data_root=/data"])
    validate_config(cfg)
    check_targets(cfg)
    assert cfg.task.name == task
    assert cfg.task.datasets.test._target_ == "clipeval.data.wds.WebDatasetSource"
    assert cfg.task.root.startswith("/data/wds_")


@pytest.mark.parametrize("task", RETRIEVAL)
def test_the_retrieval_datasets_read_karpathys_split_or_the_mirror_under_the_data_root(task):
    cfg = compose_config([f"task={task}", "data_root=/data"])
    validate_config(cfg)
    check_targets(cfg)
    assert cfg.task.main_metric == "mean_recall@1"
    assert list(cfg.task.datasets.test.root) == [
        f"/data/{task}",
        f"/data/wds_{task}" if task == "flickr30k" else "/data/wds_mscoco_captions",
    ]


def test_winogavil_reads_the_hub_repositorys_files_under_the_data_root():
    cfg = compose_config(["task=winogavil", "data_root=/data"])
    validate_config(cfg)
    check_targets(cfg)
    assert cfg.task.main_metric == "jaccard_score_10-12"
    assert cfg.task.datasets.test._target_ == "clipeval.data.associations.WinoGAViLSource"
    assert cfg.task.datasets.test.root == "/data/winogavil"


def test_the_suite_composes_with_every_dataset_optional():
    cfg = compose_config(["suite=openclip_benchmark", "data_root=/data"])
    validate_config(cfg)
    check_targets(cfg)
    assert sorted(cfg.suite.tasks) == sorted(TASKS)
    assert all(cfg.suite.tasks[t].datasets.test.optional for t in TASKS)


def test_a_benchmark_entry_must_name_a_task_of_the_suite_or_say_why_it_is_unavailable():
    suite = {"name": "b", "tasks": {"cars": {"name": "cars", "datasets": {"test": {"_target_": "x"}},
             "evaluators": {"z": {"_target_": "y"}}}}}  # fmt: skip
    with pytest.raises(ClipevalError, match=r"names task 'flickr30k', which the suite does not run"):
        SuiteConfig.model_validate(suite | {"benchmark": {"label": "x", "datasets": {"Flickr": "flickr30k"}}})
    with pytest.raises(ClipevalError, match=r"marked unavailable .* but the suite runs task 'cars'"):
        SuiteConfig.model_validate(
            suite | {"benchmark": {"label": "x", "datasets": {"Cars": {"task": "cars", "unavailable": "why"}}}}
        )


# ---------------------------------------------------------------- missing data


def test_a_benchmark_task_without_its_data_exits_2_saying_where_and_how_to_get_it(tmp_path, capsys):
    err = exit_2(["task=cars", f"data_root={tmp_path}"], capsys)
    assert "Task 'cars': Stanford Cars" in err
    assert f"{tmp_path}/wds_cars/test/nshards.txt" in err
    assert "huggingface-cli download --repo-type dataset clip-benchmark/wds_cars" in err


def test_the_benchmark_with_no_data_at_all_exits_2_naming_the_data_root(tmp_path, capsys):
    err = exit_2(["suite=openclip_benchmark", f"data_root={tmp_path}"], capsys)
    assert "the data of none of its 38 datasets is present" in err
    assert f"looked in {tmp_path}/wds_imagenet1k/test/nshards.txt" in err and "set data_root=DIR" in err


# ---------------------------------------------------------------- a real run: two mirrors present, 36 absent


def make_grouped_wds(root: Path, classes: list[str], groups: list[int], per_class: int = 4) -> Path:
    """``make_wds``'s layout with a ``.npy`` metadata array per sample ([group, 7]), as the WILDS and fairness
    mirrors ship; sample i of the shard is in ``groups[i % len(groups)]``."""
    make_wds(root, classes, per_class=per_class, shards=1)
    samples = [(label, i) for label in range(len(classes)) for i in range(per_class)]
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for n, (label, i) in enumerate(samples):
            png = io.BytesIO()
            synthetic_image(label, i).save(png, format="PNG")
            meta = io.BytesIO()
            np.save(meta, np.array([groups[n % len(groups)], 7], dtype=np.int64))
            for ext, data in (("png", png.getvalue()), ("cls", str(label).encode()), ("npy", meta.getvalue())):
                info = tarfile.TarInfo(f"s{n:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def benchmark_run(tiny_open_clip, tmp_path_factory):
    """suite=openclip_benchmark with Stanford Cars, GeoDE, Flickr and WinoGAViL generated under the data root, the rest
    absent."""
    base = tmp_path_factory.mktemp("bench38")
    data = base / "data"
    make_wds(data / "wds_cars", ["sedan", "pickup truck", "convertible"], per_class=4, shards=2)
    groups = [0, 1, 2, 1, 0]
    make_grouped_wds(data / "wds_geode_test", ["bag", "chair", "stove", "tree"], groups, per_class=5)
    write_wds(data / "wds_flickr30k", caption_set())  # Flickr: a CLIP_benchmark retrieval mirror
    write_winogavil(data / "winogavil", zipped=True)  # WinoGAViL: the hub repository's CSV and image zip
    run_dir = base / "run"

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out):
        env.setenv("CLIPEVAL_STORE", str(base / "store"))  # the autouse store and cache are per test, set up after this
        env.setenv("CLIPEVAL_CACHE", str(base / "cache"))
        doc = run_in_process(
            ["suite=openclip_benchmark", f"data_root={data}", *open_clip_overrides(tiny_open_clip)], run_dir
        )
    return doc, out.getvalue(), run_dir, groups, base / "store"


def test_the_benchmark_runs_the_datasets_present_and_lists_every_other_as_missing(benchmark_run):
    doc, printed, *_ = benchmark_run
    spec = BenchmarkSpec.from_json(doc["benchmark"])
    missing = {e.name: e.missing for e in spec.entries if e.missing}
    assert sorted(set(ENTRIES) - set(missing)) == ["Flickr", "GeoDE", "Stanford Cars", "WinoGAViL"]
    assert "wds_sun397/test/nshards.txt" in missing["SUN397"]
    main = {(r["task"], r["metric"]): r for r in doc["records"] if r["dataset"] == "test"}
    assert main[("cars", "top1")]["n"] == 12 and main[("geode", "worst_group_top1")]["n"] > 0
    flickr = next(e for e in spec.entries if e.name == "Flickr")
    assert (flickr.task, flickr.metric) == ("flickr30k", "mean_recall@1") and ("flickr30k", "mean_recall@1") in main
    assert main[("winogavil", "jaccard_score_10-12")]["n"] == 6  # the generated instances with 10 or 12 candidates
    assert not any(r["metric"] == "benchmark_average" for r in doc["records"])  # incomplete: no average record
    lines = printed.splitlines()
    cars = next(line for line in lines if line.startswith("Stanford Cars"))
    assert "cars/test" in cars and "top1" in cars and cars.rstrip().endswith(" 12")  # n per dataset
    assert any(line.startswith("SUN397") and "data absent (looked in" in line for line in lines)
    assert "average over 38 datasets: INCOMPLETE (34 of 38 missing); mean of the 4 present" in printed
    assert any(line.startswith("WinoGAViL") and "jaccard_score_10-12" in line for line in lines)


def test_the_worst_group_record_equals_a_plain_loop_over_the_kept_predictions(benchmark_run):
    import pyarrow.parquet as pq

    doc, _, run_dir, groups, _ = benchmark_run
    kept = pq.read_table(run_dir / "predictions" / "geode" / "test.parquet").to_pydict()  # the zero-shot evaluator's
    ids, labels = kept["sample_id"], kept["label"]
    top1 = [row[0] for row in kept["topk"]]
    by_group: dict[int, list[bool]] = {}
    for sample_id, label, pred in zip(ids, labels, top1, strict=True):
        n = int(sample_id.split("/s")[1])  # ids are <shard>/s<n>
        by_group.setdefault(groups[n % len(groups)], []).append(pred == label)
    worst = min(sum(h) / len(h) for h in by_group.values())
    record = next(r for r in doc["records"] if r["metric"] == "worst_group_top1")
    assert record["value"] == pytest.approx(worst, abs=1e-12)
    assert record["n"] in [len(h) for h in by_group.values() if sum(h) / len(h) == worst]


def test_a_complete_benchmark_records_its_average(tiny_open_clip, tmp_path, capsys):
    """The suite cut to two datasets that are both present: the average is recorded, as a derived record."""
    make_wds(tmp_path / "data" / "wds_cars", ["sedan", "pickup truck", "convertible"], per_class=3, shards=1)
    make_wds(tmp_path / "data" / "wds_vtab-pets", ["cat", "dog"], per_class=4, shards=1)
    overrides = ["suite=openclip_benchmark", f"data_root={tmp_path / 'data'}", "~suite.benchmark.datasets",
                 "+suite.benchmark.datasets={Stanford Cars: cars, Oxford-IIIT Pet: pets}"]  # fmt: skip
    doc = run_in_process([*overrides, *open_clip_overrides(tiny_open_clip)], tmp_path / "run")
    main = [next(r for r in doc["records"] if (r["task"], r["metric"]) == key)
            for key in (("cars", "top1"), ("pets", "mean_per_class_recall"))]  # fmt: skip
    average = next(r for r in doc["records"] if r["metric"] == "benchmark_average")
    assert average["task"] == "openclip_benchmark" and average["n"] == 9 + 8
    assert average["value"] == pytest.approx((main[0]["value"] + main[1]["value"]) / 2, abs=1e-12)
    assert "average over 2 datasets: " in capsys.readouterr().out


def test_the_store_report_shows_the_benchmark_table_from_the_stored_document(benchmark_run, tmp_path):
    from clipeval.report.pages import write_store_report

    store = benchmark_run[4]
    markdown, _ = write_store_report(store, tmp_path / "report")
    text = markdown.read_text()
    assert "INCOMPLETE (34 of 38 datasets missing); mean of the 4 present" in text
    cars = next(line for line in text.splitlines() if line.startswith("| Stanford Cars"))
    assert "| 12 |" in cars  # n per dataset


# ---------------------------------------------------------------- the average


def _published_rows() -> list[dict[str, str]]:
    if not OPENCLIP_CSV.is_file():
        pytest.skip("../shared/data is absent")
    return list(csv.DictReader(OPENCLIP_CSV.open()))


def test_the_average_is_the_plain_mean_of_the_38_main_metrics_as_open_clip_publishes_it():
    """Feed each published row's 38 numbers as records: the average equals the table's own column (4 decimals)."""
    spec = BenchmarkSpec("b", [Entry(name, f"t{i}", "test", "m") for i, name in enumerate(ENTRIES)])
    for row in _published_rows():
        records = [Record("test", "m", float(row[e.name]), 100, (0.0, 1.0), task=e.task) for e in spec.entries]
        result = benchmark_result(spec, records)
        assert result.complete
        assert result.average == pytest.approx(float(row["Average perf. on 38 datasets"]), abs=6e-5)


def test_an_incomplete_benchmark_has_no_average_and_no_record():
    spec = BenchmarkSpec("b", [Entry("A", "a", "test", "top1"), Entry("B", "b", "test", "top1"),
                               Entry("C", "c", "test", "top1", missing="data absent")])  # fmt: skip
    records = [
        Record("test", "top1", 0.5, 10, (0.2, 0.8), task="a"),
        Record("test", "top1", 0.7, 30, (0.5, 0.85), task="b"),
    ]
    result = benchmark_result(spec, records)
    assert not result.complete and result.average is None and result.record("suite") is None
    assert result.mean_of_present == pytest.approx(0.6)
    complete = benchmark_result(BenchmarkSpec("b", spec.entries[:2]), records)
    average = complete.record("suite")
    assert (average.value, average.n, average.ci) == (
        pytest.approx(0.6),
        40,
        (pytest.approx(0.35), pytest.approx(0.825)),
    )


def test_a_record_counts_only_with_its_entrys_params():
    spec = BenchmarkSpec("b", [Entry("Flickr", "flickr30k", "test", "top1", {"k": 1})])
    assert (
        benchmark_result(spec, [Record("test", "top1", 0.5, 10, (0.2, 0.8), task="flickr30k", params={"k": 5})])
        .rows[0]
        .record
        is None
    )


# ---------------------------------------------------------------- the new metrics, against independent computations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_equals_wilds_f1_over_the_classes_of_the_labels(seed):
    # WILDS' F1._compute: sklearn f1_score(y_true, y_pred, average="macro", labels=torch.unique(y_true))
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 200)
    pred = np.where(rng.random(200) < 0.5, labels, rng.integers(0, 9, 200))  # classes 7, 8 only predicted
    assert set(pred.tolist()) - set(labels.tolist())  # the case where the two definitions differ
    wilds = f1_score(labels, pred, average="macro", labels=np.unique(labels))
    assert macro_f1(pred, labels) == pytest.approx(wilds, abs=1e-12)
    assert macro_f1(pred, labels) != pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-6)
    lo, hi = bootstrap_interval(pred, labels, macro_f1(pred, labels), resamples=200)
    assert lo <= macro_f1(pred, labels) <= hi


def test_macro_f1_by_hand_with_a_class_only_predicted():
    # labels {0, 1}; class 5 is only predicted and adds no term (its sample is a miss of class 0)
    labels, pred = np.array([0, 0, 1, 1]), np.array([0, 5, 1, 0])
    f1_0 = 2 * 1 / (2 + 2)  # TP 1, support 2, predicted 2
    f1_1 = 2 * 1 / (2 + 1)  # TP 1, support 2, predicted 1
    assert macro_f1(pred, labels) == pytest.approx((f1_0 + f1_1) / 2, abs=1e-12)


def test_worst_group_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    hits, groups = rng.random(300) < 0.6, rng.choice([0, 2, 5, 9], 300)
    accuracy = {}
    for g in set(groups.tolist()):
        members = [h for h, gg in zip(hits, groups, strict=True) if gg == g]
        accuracy[g] = (sum(members) / len(members), sum(members), len(members))
    g = min(accuracy, key=lambda k: accuracy[k][0])
    assert worst_group(hits, groups) == (g, accuracy[g][1], accuracy[g][2])
    assert clopper_pearson(accuracy[g][1], accuracy[g][2])[0] <= accuracy[g][0]


def test_sample_metadata_is_read_from_the_shards_by_sample_id(tmp_path):
    from clipeval.data.wds import WebDatasetSource

    root = make_grouped_wds(tmp_path / "m", ["a", "b"], [3, 4], per_class=2)
    metadata = WebDatasetSource(root).sample_metadata()
    assert {k: v.tolist() for k, v in metadata.items()} == {f"0/s{n:04d}": [[3, 4][n % 2], 7] for n in range(4)}


def test_worst_group_without_metadata_is_a_clear_error(tiny_open_clip, tmp_path):
    make_wds(tmp_path / "data" / "wds_geode_test", ["bag", "chair"], per_class=2, shards=1)  # no .npy
    overrides = ["task=geode", f"data_root={tmp_path / 'data'}", *open_clip_overrides(tiny_open_clip)]
    with pytest.raises(ClipevalError, match=r"none of its samples has a metadata array \(\.npy\)"):
        run_in_process(overrides, tmp_path / "run")


# ---------------------------------------------------------------- the golden files


def test_golden_files_hold_the_published_numbers_of_the_shared_table():
    from clipeval.check.documents import load_golden

    rows = {(r["name"], r["pretrained"]): r for r in _published_rows()}
    column = {task: name for name, task in ENTRIES.items() if isinstance(task, str)}
    assert len(GOLDEN) >= 3
    for path in GOLDEN:
        golden = load_golden(path)
        raw = json.loads(path.read_text())
        row = rows[(raw["model"]["arch"].removesuffix("-quickgelu"), raw["model"]["pretrained"])]
        assert len(golden.records) == len(TASKS) + 1  # each dataset's main metric, and the average
        *datasets, average = golden.records
        for record in datasets:
            assert record.metric == task_yaml(record.task)["main_metric"]
            assert record.value == float(row[column[record.task]]), (path.name, record.task)
            assert record.n is None and record.tolerance == 0.01
        assert (average.task, average.dataset, average.metric) == ("openclip_benchmark", "average", "benchmark_average")
        assert average.value == float(row["Average perf. on 38 datasets"]) and average.tolerance == 0.01


def test_a_generated_mirror_compared_with_a_golden_file_reports_each_dataset(benchmark_run, tmp_path):
    """`check compare --golden` reads the golden file's format: a one-record golden file against the run."""
    from clipeval.check.compare import compare
    from clipeval.check.documents import load_golden
    from clipeval.results.store import ResultsDocument

    doc, _, run_dir, *_ = benchmark_run
    raw = json.loads(GOLDEN[0].read_text())
    raw["records"] = [r for r in raw["records"] if r["task"] == "cars"]
    raw["selection"]["tasks"] = {"cars": "1"}
    (tmp_path / "g.json").write_text(json.dumps(raw))
    rows = compare(load_golden(tmp_path / "g.json"), [ResultsDocument.load(run_dir / "results.json")])
    assert [(r.record.task, r.record.metric) for r in rows] == [("cars", "top1")]


# ---------------------------------------------------------------- the hub


@pytest.mark.parametrize(
    ("root", "url"),
    [
        (
            "hf://datasets/clip-benchmark/wds_cars",
            "https://huggingface.co/datasets/clip-benchmark/wds_cars/resolve/main/",
        ),
        (
            "hf://datasets/djghosh/wds_geode_test@" + "a" * 40 + "/",
            "https://huggingface.co/datasets/djghosh/wds_geode_test/resolve/" + "a" * 40 + "/",
        ),
        ("hf://datasets/o/n@v1/sub/dir", "https://huggingface.co/datasets/o/n/resolve/v1/sub/dir/"),
    ],
)
def test_an_hf_root_is_the_hubs_download_url_of_the_dataset_repository(root, url):
    from clipeval.data.remote import HF_PIN, hub_url, is_remote

    assert is_remote(root) and hub_url(root) == url
    assert bool(HF_PIN.search(url)) == ("a" * 40 in root)  # a commit in the root pins the cached features


def test_an_hf_root_of_another_form_is_refused_with_the_form_to_use():
    from clipeval.data.remote import hub_url

    with pytest.raises(ClipevalError, match=r"hf://datasets/<owner>/<name>\[@<revision>\]"):
        hub_url("hf://clip-benchmark/wds_cars")


@pytest.mark.parametrize("classes, kept", [(5, False), (3, False), (6, True)])
def test_worst_group_top5_with_5_classes_or_fewer_is_left_out_with_a_note(classes, kept):
    from array_context import ArrayContext

    from clipeval.evaluators.groups import WorstGroup

    rng = np.random.default_rng(0)
    labels = np.arange(12) % classes
    ctx = ArrayContext(
        {"test": (rng.normal(size=(12, classes)), labels)},
        sample_metadata={"test": {f"test/{i:05d}": np.array([i % 2, 7]) for i in range(12)}},
    )
    records = WorstGroup(field=0, group_by="income", k=5).evaluate(ctx)
    assert [r.metric for r in records] == (["worst_group_top5"] if kept else [])
    if not kept:
        (note,) = ctx.notes
        assert note["left_out"] == ["worst_group_top5"] and f"with {classes} classes" in note["message"]
    assert [r.metric for r in WorstGroup(field=0, group_by="income", k=1).evaluate(ctx)] == ["worst_group_top1"]


def _grouped_mirror_with(root: Path, npy: dict[int, bytes]) -> Path:
    """``make_grouped_wds`` with the .npy member of the samples in ``npy`` replaced by the bytes given."""
    make_grouped_wds(root, ["bag", "chair"], [0, 1], per_class=2)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            n = int(m.name[1:5])
            if m.name.endswith(".npy") and n in npy:
                data = npy[n]
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


@pytest.mark.parametrize(
    "npy, message",
    [
        ({2: b"garbage"}, r"0\.tar: sample 's0002\.npy': its \.npy member is not a readable numpy array"),
        ({1: b""}, r"0\.tar: sample 's0001\.npy': its \.npy member is not a readable numpy array"),
        (
            {3: _npy([-1, 7])},
            r"sample '0/s0003' has region -1 \(metadata field 0\); a group must be a whole number >= 0",
        ),
        ({0: _npy([1.5, 7.0])}, r"sample '0/s0000' has region 1\.5 .*whole number >= 0"),
        ({0: _npy(3)}, r"the metadata of sample '0/s0000' is a single value, not an array of fields"),
    ],
)
def test_unreadable_or_invalid_group_metadata_exits_2_naming_the_sample(npy, message, tiny_open_clip, tmp_path, capsys):
    _grouped_mirror_with(tmp_path / "data" / "wds_geode_test", npy)
    overrides = ["task=geode", f"data_root={tmp_path / 'data'}", *open_clip_overrides(tiny_open_clip)]
    with pytest.raises(ClipevalError, match=message):
        run_in_process(overrides, tmp_path / "run")


def test_whole_float_groups_are_grouped_as_their_integers(tmp_path):
    # as WILDS' CombinatorialGrouper, which converts metadata to long (it refuses values below 0)
    from array_context import ArrayContext

    from clipeval.evaluators.groups import WorstGroup

    rng = np.random.default_rng(0)
    meta = {f"test/{i:05d}": np.array([float(i % 3), 2016.0]) for i in range(12)}
    ctx = ArrayContext({"test": (rng.normal(size=(12, 4)), np.arange(12) % 4)}, sample_metadata={"test": meta})
    (record,) = WorstGroup(field=0, group_by="region", k=1).evaluate(ctx)
    assert record.n == 4


@pytest.mark.parametrize("content", [None, ""])
def test_a_mirror_without_templates_is_prompted_with_the_default_and_the_run_notes_it(
    content, tiny_open_clip, tmp_path, caplog
):
    root = make_wds(tmp_path / "data" / "wds_cars", ["sedan", "pickup truck", "convertible"], per_class=2, shards=1)
    templates = root / "zeroshot_classification_templates.txt"
    templates.unlink()
    if content is not None:
        templates.write_text(content)
    doc = run_in_process(
        ["task=cars", f"data_root={tmp_path / 'data'}", *open_clip_overrides(tiny_open_clip)], tmp_path / "run"
    )
    (note,) = [n for n in doc["notes"] if "prompt templates" in n["message"]]
    assert note["templates"] == ["a photo of a {c}."] and note["dataset"] == "test"
    assert "published results used the mirror's templates" in note["message"]
    assert "default template 'a photo of a {c}.'" in caplog.text
    assert {r["metric"] for r in doc["records"]} >= {"top1", "mean_per_class_recall"}  # the fallback still runs


def test_a_mirror_with_templates_has_no_template_note(tiny_open_clip, tmp_path):
    make_wds(tmp_path / "data" / "wds_cars", ["sedan", "pickup truck", "convertible"], per_class=2, shards=1)
    doc = run_in_process(
        ["task=cars", f"data_root={tmp_path / 'data'}", *open_clip_overrides(tiny_open_clip)], tmp_path / "run"
    )
    assert not [n for n in doc.get("notes", []) if "prompt templates" in n["message"]]


def test_group_metadata_is_checked_when_the_task_loads_before_any_model(tmp_path):
    from conftest import compose_config

    from clipeval.run.task import load_task

    _grouped_mirror_with(tmp_path / "data" / "wds_geode_test", {3: _npy([-1, 7])})
    cfg = compose_config(["task=geode", f"data_root={tmp_path / 'data'}"])
    with pytest.raises(
        ClipevalError, match=r"Task 'geode', evaluator 'worst_group': Dataset 'test': sample '0/s0003' has region -1"
    ):
        load_task(cfg.task)


def test_an_absent_optional_dataset_is_one_warning_line_and_how_to_get_it_is_at_debug(tmp_path, caplog):
    """The benchmark lists dozens of absent datasets: each is one line saying where it looked, not a page."""
    import logging

    from clipeval.run.task import load_task

    caplog.set_level(logging.DEBUG, logger="clipeval.run.task")
    task = load_task(compose_config(["task=cars", f"data_root={tmp_path}", "+task.datasets.test.optional=true"]).task)
    assert list(task.missing) == ["test"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "\n" not in warning.getMessage() and f"looked in {tmp_path}/wds_cars/test/nshards.txt" in warning.getMessage()
    )
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert "huggingface-cli download --repo-type dataset clip-benchmark/wds_cars" in debug.getMessage()


def test_a_run_of_some_datasets_is_gated_on_those_with_present_only(benchmark_run, capsys):
    """The published golden file holds all 38 datasets and the average; a run of four of them compares those four
    with --present-only and lists the other 35 records as absent (never a pass)."""
    from clipeval.check.cli import main as check

    run_dir = benchmark_run[2]
    golden = str(GOLDEN[[p.name for p in GOLDEN].index("openclip_benchmark_vit_b32_openai.json")])
    with pytest.raises(SystemExit) as exit_info:
        check(["compare", "--golden", golden, str(run_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "34 more of the golden file's records" in err and "--present-only" in err
    with pytest.raises(SystemExit) as exit_info:
        check(["compare", "--golden", golden, str(run_dir), "--present-only"])
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, 1)  # a random model may fall below the published numbers: that is a verdict
    assert "4 checked:" in out and "35 of the golden file's records are not in the candidate (not compared)" in out
    winogavil = next(line for line in out.splitlines() if line.startswith("winogavil/test"))
    assert "jaccard_score_10-12" in winogavil and "0.4125" in winogavil
    sun = next(line for line in out.splitlines() if line.startswith("sun397/test"))
    assert " absent " in sun and "—" in sun


# ---------------------------------------------------------------- the gate on worst-group and macro-F1 records


def _brute_force_p(ref: np.ndarray, cand: np.ndarray, metric) -> float:
    """Every swap pattern of the differing samples, the metric recomputed from whole arrays each time."""
    import itertools

    differ = [i for i in range(len(ref)) if ref[i] != cand[i]]
    observed = abs(metric(cand) - metric(ref))
    hits = 0
    for swaps in itertools.product((False, True), repeat=len(differ)):
        a, b = ref.copy(), cand.copy()
        for i, swap in zip(differ, swaps, strict=True):
            if swap:
                a[i], b[i] = cand[i], ref[i]
        hits += abs(metric(b) - metric(a)) >= observed - 1e-12
    return hits / 2 ** len(differ)


@pytest.mark.parametrize("seed", range(4))
def test_the_paired_test_of_the_worst_group_and_macro_f1_equals_brute_force(seed):
    from clipeval.check.stats import paired_statistic_test
    from clipeval.results.samples import Samples
    from clipeval.results.statistics import STATISTICS

    rng = np.random.default_rng(seed)
    n = 40
    ids = [f"s{i:03d}" for i in range(n)]
    groups, labels = rng.integers(0, 4, n), rng.integers(0, 5, n)
    hits_ref = rng.random(n) < 0.6
    hits_cand = np.where(rng.random(n) < 0.25, ~hits_ref, hits_ref)  # about 10 samples differ
    pred_ref = np.where(rng.random(n) < 0.5, labels, rng.integers(0, 6, n))
    pred_cand = np.where(rng.random(n) < 0.25, rng.integers(0, 6, n), pred_ref)
    cases = [
        ("worst_group_top1", hits_ref, hits_cand, lambda h: worst_group(h, groups)[1] / worst_group(h, groups)[2],
         lambda h: Samples.from_arrays(ids, groups, correct={"top1": h}), "top1"),
        ("macro_f1", pred_ref, pred_cand, lambda p: macro_f1(p, labels),
         lambda p: Samples.from_arrays(ids, labels, p[:, None]), None),
    ]  # fmt: skip
    for metric, ref, cand, plain, samples_of, outcome in cases:
        statistic = STATISTICS[metric]
        (v_ref, fixed), (v_cand, _) = (statistic.vectors(samples_of(x), outcome) for x in (ref, cand))
        assert statistic.value(samples_of(ref), outcome) == pytest.approx(plain(ref), abs=1e-12)
        p, m, how = paired_statistic_test(v_ref, v_cand, lambda t: statistic.finish(t, fixed))  # noqa: B023
        assert how == "exact" and m == int((ref != cand).sum())
        assert p == pytest.approx(_brute_force_p(ref, cand, plain), abs=1e-12), metric


def test_a_worst_group_record_is_gated_by_a_paired_test_against_a_golden_file_from_a_run(tiny_open_clip, tmp_path):
    """It was gated by a fixed 0.01 tolerance, so a noise-level change of the worst group failed (a breaker's case:
    GeoDE, top-1 McNemar p=0.585 ok, worst_group_top1 REGRESSED by tolerance)."""
    from conftest import save_tiny_open_clip

    from clipeval.check.cli import main as check
    from clipeval.check.compare import compare
    from clipeval.check.documents import load_golden, load_run

    make_grouped_wds(tmp_path / "data" / "wds_geode_test", ["bag", "chair", "stove", "tree"], [0, 1, 2], per_class=6)
    data = ["task=geode", f"data_root={tmp_path / 'data'}"]
    run_in_process([*open_clip_overrides(tiny_open_clip), *data], tmp_path / "ref")
    other = dict(tiny_open_clip, pretrained=str(save_tiny_open_clip(tmp_path, seed=3)))
    run_in_process([*open_clip_overrides(other), *data], tmp_path / "cand")
    check(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    golden = load_golden(tmp_path / "golden.json")
    rows = {r.metric: r for r in compare(golden, [load_run(tmp_path / "cand")])}
    assert "paired permutation" in rows["worst_group_top1"].evidence
    assert "tolerance" not in rows["worst_group_top1"].evidence
    same = {r.metric: r for r in compare(golden, [load_run(tmp_path / "ref")])}
    assert same["worst_group_top1"].verdict == "ok" and "p=1 " in same["worst_group_top1"].evidence


def test_a_partly_downloaded_mirror_stops_the_suite_instead_of_being_listed_as_absent(tmp_path, capsys):
    """A mirror with a shard missing was shown as 'data absent' and the run exited 0: an incomplete download hid."""
    make_wds(tmp_path / "data" / "wds_cars", ["sedan", "pickup truck", "convertible"], per_class=2, shards=1)
    (tmp_path / "data" / "wds_cars" / "test" / "nshards.txt").write_text("2\n")
    err = exit_2(["suite=openclip_benchmark", f"data_root={tmp_path / 'data'}"], capsys)
    assert "Task 'cars', dataset 'test': 1 of 2 shards" in err and "it is partly there: complete it" in err


def test_present_only_checks_the_data_of_the_compared_records_alone(benchmark_run, tmp_path, capsys, caplog):
    from clipeval.check.cli import main as check

    run_dir = benchmark_run[2]
    check(["record", str(run_dir), "--out", str(tmp_path / "golden.json")])
    golden = json.loads((tmp_path / "golden.json").read_text())
    golden["records"].append(dict(golden["records"][0], task="pets", metric="top1", samples=None, outcome=None))
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        check(["compare", "--golden", str(tmp_path / "golden.json"), str(run_dir), "--present-only"])
    assert exit_info.value.code == 0
    assert "record no content key" not in caplog.text  # pets is not in the candidate: nothing to say about its data
    assert "1 of the golden file's records are not in the candidate" in capsys.readouterr().out


def test_the_missing_record_hint_names_present_only_only_when_something_is_present(tmp_path, capsys):
    from test_gate import write_run

    from clipeval.check.cli import main as check

    labels = np.arange(20) % 4
    write_run(tmp_path / "other", labels, np.stack([labels] * 5, axis=1))  # a run of another task
    with pytest.raises(SystemExit):
        check(["compare", "--golden", str(GOLDEN[0]), str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert "it has none of them (is it a run of the same tasks?)" in err and "--present-only" not in err


def test_a_worst_group_record_whose_n_is_not_its_groups_size_is_refused(benchmark_run, tmp_path, capsys):
    """Its n is the worst group's size, which its per-sample data give (a breaker set it from 48 to 49 unnoticed)."""
    from clipeval.check.cli import main as check

    doc = json.loads((benchmark_run[2] / "results.json").read_text())
    record = next(r for r in doc["records"] if r["metric"] == "worst_group_top1")
    record["n"] += 1
    (tmp_path / "results.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as exit_info:
        check(["record", str(tmp_path / "results.json"), "--out", str(tmp_path / "golden.json")])
    assert exit_info.value.code == 2
    assert f"n = {record['n']}, but its per-sample data" in capsys.readouterr().err
