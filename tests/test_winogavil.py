"""WinoGAViL: the hub repository's files read and checked, DataComp's association protocol, and its Jaccard scores
against an independent computation.

The reference here follows DataComp's ``eval_utils/wino_eval.py`` step by step with open_clip's own API (one instance
at a time: its candidate images through the model's transform, the prompt through open_clip's tokenizer,
``np.argsort`` of the similarities, sklearn's ``jaccard_score``) and shares no code with clipeval's evaluator.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from association_data import image_of, make_instances, write_winogavil
from conftest import exit_2, open_clip_overrides, run_in_process
from PIL import Image
from scipy import stats

from clipeval.data.associations import WinoGAViLSource
from clipeval.errors import ClipevalError
from clipeval.evaluators.association import Association, datacomp_prompt, jaccard_scores
from clipeval.features.encode import AssociationSet
from clipeval.results.record import METRICS

GROUPS = {"5": [5], "6": [6], "10": [10], "12": [12], "5-6": [5, 6], "10-12": [10, 12]}


def reference_scores(tiny: dict, root: Path, instances: list[dict]) -> tuple[np.ndarray, np.ndarray, float]:
    """(per-instance Jaccard, number of candidates, smallest similarity gap at a cut) as DataComp computes them."""
    import open_clip
    from sklearn.metrics import jaccard_score

    model, _, transform = open_clip.create_model_and_transforms(tiny["arch"], pretrained=tiny["pretrained"])
    tokenizer = open_clip.get_tokenizer(tiny["arch"])
    model.eval()
    scores, sizes, gap = [], [], np.inf
    for inst in instances:
        images = torch.stack(
            [transform(Image.open(root / "winogavil_images" / f"{c}.jpg").convert("RGB")) for c in inst["candidates"]]
        )
        cue = inst["cue"].lower()
        prompt = ("An " if cue[0] in "aeiou" else "A ") + cue
        with torch.no_grad():
            x = model.encode_image(images, normalize=True)
            t = model.encode_text(tokenizer([prompt]), normalize=True)
        logits = (t @ x.T).squeeze(0).numpy()
        y_true = np.isin(inst["candidates"], inst["associations"])
        k = int(y_true.sum())
        y_pred = np.isin(np.arange(len(logits)), np.argsort(logits)[-k:])
        scores.append(jaccard_score(y_true, y_pred))
        sizes.append(len(logits))
        ranked = np.sort(logits)[::-1]
        gap = min(gap, ranked[k - 1] - ranked[k])
    return np.array(scores), np.array(sizes), gap


def effective_n_interval(scores: np.ndarray) -> tuple[float, float]:
    """Clopper–Pearson at n* = p(1 - p) / (s^2 / n), at most n, from scipy.stats."""
    n, p = len(scores), scores.mean()
    var = scores.var(ddof=1) / n if n > 1 else 0.0
    n_eff = n if var == 0 or p in (0, 1) else min(n, max(1.0, p * (1 - p) / var))
    x = p * n_eff
    lo = stats.beta.ppf(0.025, x, n_eff - x + 1) if x > 0 else 0.0
    hi = stats.beta.ppf(0.975, x + 1, n_eff - x) if x < n_eff else 1.0
    return min(lo, p), max(hi, p)


# ---------------------------------------------------------------- the protocol, end to end


@pytest.mark.parametrize("zipped", [False, True], ids=["unpacked", "zip"])
def test_the_task_gives_datacomps_jaccard_scores_by_an_independent_computation(zipped, tiny_open_clip, tmp_path):
    instances = make_instances()
    root = write_winogavil(tmp_path / "data" / "winogavil", instances, zipped=zipped)
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}"],
                         tmp_path / "run")  # fmt: skip
    unpacked = root if not zipped else write_winogavil(tmp_path / "unpacked", instances)
    scores, sizes, gap = reference_scores(tiny_open_clip, unpacked, instances)
    assert gap > 1e-5  # no near-tie at any cut: a batch's last bits cannot change a selection
    records = {r["metric"]: r for r in doc["records"]}
    assert set(records) == {"avg_jaccard_score", *(f"jaccard_score_{g}" for g in GROUPS)}
    for metric, chosen in [("avg_jaccard_score", np.ones(len(scores), bool))] + [
        (f"jaccard_score_{g}", np.isin(sizes, counts)) for g, counts in GROUPS.items()
    ]:
        record = records[metric]
        assert record["value"] == pytest.approx(scores[chosen].mean(), abs=1e-6), metric
        assert record["n"] == chosen.sum()
        assert record["ci"] == pytest.approx(effective_n_interval(scores[chosen]), abs=1e-6), metric
        assert record["ci_method"] == "clopper-pearson-effective-n"
    assert 0 < records["avg_jaccard_score"]["value"] < 1  # a random model: some right, some wrong


def test_the_kept_per_instance_scores_are_the_records_and_a_rerun_encodes_nothing(tiny_open_clip, tmp_path, caplog):
    import pyarrow.parquet as pq

    write_winogavil(tmp_path / "data" / "winogavil")
    overrides = [*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}"]
    first = run_in_process(overrides, tmp_path / "run1")
    kept = pq.read_table(tmp_path / "run1" / "predictions" / "winogavil" / "test.jaccard_10-12.parquet").to_pydict()
    record = next(r for r in first["records"] if r["metric"] == "jaccard_score_10-12")
    assert sorted(kept["label"]) == [10, 10, 10, 12, 12, 12]  # labels: each instance's number of candidates
    assert np.mean(kept["jaccard"]) == pytest.approx(record["value"], abs=1e-7) and len(kept["jaccard"]) == record["n"]
    caplog.set_level(logging.DEBUG, logger="clipeval")
    caplog.clear()  # the first run's lines are captured too when an earlier test left the logger at INFO
    second = run_in_process(overrides, tmp_path / "run2")
    assert "cache miss" not in caplog.text and "prompts for the other" not in caplog.text
    assert second["records"] == first["records"]


def test_a_changed_association_changes_the_data_key_and_the_scores_follow(tiny_open_clip, tmp_path):
    instances = make_instances()
    root = write_winogavil(tmp_path / "w", instances)
    before = WinoGAViLSource(root)
    instances[0]["associations"] = [c for c in instances[0]["candidates"] if c not in instances[0]["associations"]][:2]
    write_winogavil(root, instances)
    after = WinoGAViLSource(root)
    assert before.key != after.key  # the results' data key covers the CSV, not only the images
    assert after.instances()[0].associations == tuple(instances[0]["associations"])


# ---------------------------------------------------------------- DataComp's prompt and the selection rule


@pytest.mark.parametrize(
    ("cue", "prompt"),
    [
        ("apple", "An apple"),
        ("Ocean", "An ocean"),
        ("tree", "A tree"),
        ("umbrella", "An umbrella"),
        ("Sky", "A sky"),
        ("hour", "A hour"),
        ("unicorn", "An unicorn"),
    ],  # fmt: skip
)
def test_the_cue_is_prompted_with_datacomps_article_rule(cue, prompt):
    # get_clip_prompt: lower-case, then "An" when the first letter is a vowel letter (not by sound)
    assert datacomp_prompt(cue) == prompt


def test_a_template_replaces_the_article_rule():
    assert Association(template="a photo of {c}.").prompt("Moon") == "a photo of Moon."
    with pytest.raises(ClipevalError, match=r"string with \{c\}"):
        Association(template="a photo")


def _set(sim_rows: list[list[float]], answers: list[list[bool]]) -> tuple[torch.Tensor, AssociationSet]:
    """Candidates whose similarity to their cue is given: image features [cos, sin] against a cue [1, 0]."""
    feats, candidates, start = [], [], 0
    for row in sim_rows:
        feats += [[s, float(np.sqrt(1 - s * s))] for s in row]
        candidates.append(torch.arange(start, start + len(row)))
        start += len(row)
    cue = torch.tensor([[1.0, 0.0]] * len(sim_rows))
    answers_t = [torch.tensor(a) for a in answers]
    ids = [str(i) for i in range(len(sim_rows))]
    return torch.tensor(feats), AssociationSet(cue, candidates, answers_t, ids, ids)


def test_the_selection_takes_the_k_most_similar_and_scores_their_jaccard_index():
    images, sets = _set(
        [[0.9, 0.1, 0.8, 0.2, 0.3], [0.9, 0.8, 0.1, 0.2, 0.3, 0.0]],
        [[True, False, True, False, False], [False, False, True, True, False, False]],
    )
    # instance 0: picks both right ones (J = 1); instance 1: picks 2 wrong of k = 2 (J = 0)
    assert jaccard_scores(images, sets).tolist() == [1.0, 0.0]
    images, sets = _set([[0.9, 0.8, 0.7, 0.1, 0.2]], [[True, False, True, True, False]])
    # k = 3: picks 0.9 (right), 0.8 (wrong), 0.7 (right): |S & A| = 2, |S | A| = 4
    assert jaccard_scores(images, sets).tolist() == [0.5]


def test_a_tie_at_the_cut_counts_against_the_model():
    # the right candidate and a wrong one score alike at the cut: the wrong one is taken (J = 0, not 1)
    images, sets = _set([[0.5, 0.5, 0.1, 0.2, 0.3]], [[False, True, False, False, False]])
    assert jaccard_scores(images, sets).tolist() == [0.0]
    images, sets = _set([[0.5, 0.5, 0.1, 0.2, 0.3]], [[True, False, False, False, False]])
    assert jaccard_scores(images, sets).tolist() == [0.0]


def test_the_jaccard_scores_equal_sklearns_on_random_instances():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(7)
    rows, answers = [], []
    for _ in range(200):
        m = int(rng.choice([5, 6, 10, 12]))
        k = int(rng.integers(1, m))
        rows.append(rng.uniform(-1, 1, m).tolist())
        answers.append(np.isin(np.arange(m), rng.choice(m, k, replace=False)).tolist())
    images, sets = _set(rows, answers)
    expected = []
    for row, right in zip(rows, answers, strict=True):
        pred = np.isin(np.arange(len(row)), np.argsort(row)[-sum(right) :])
        expected.append(jaccard_score(right, pred))
    assert jaccard_scores(images, sets) == pytest.approx(np.array(expected, np.float32), abs=1e-6)


# ---------------------------------------------------------------- options and bad data


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({}, "must be a mapping"),
        ({"avg": [5]}, "not 'avg'"),
        ({"a b": [5]}, "letters, digits"),
        ({"x": [0]}, "positive whole numbers"),
        ({"x": "10"}, "not a list"),
        ({"x": [True]}, "positive whole"),
    ],  # fmt: skip
)
def test_bad_groups_are_refused_saying_what_a_group_is(groups, message):
    with pytest.raises(ClipevalError, match=message):
        Association(groups=groups)


def test_custom_groups_register_their_metrics_and_an_empty_group_is_left_out_with_a_note(tiny_open_clip, tmp_path):
    write_winogavil(tmp_path / "data" / "winogavil")
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}",
                          "task.evaluators.association.groups={small: [5, 6], seven: [7]}"], tmp_path / "run")  # fmt: skip
    assert {r["metric"] for r in doc["records"]} == {"avg_jaccard_score", "jaccard_score_small"}
    assert "jaccard_score_seven" in METRICS
    assert any("left out jaccard_score_seven" in n["message"] for n in doc["notes"])


def test_without_the_data_the_task_exits_2_with_the_download_command(tmp_path, capsys):
    err = exit_2(["task=winogavil", f"data_root={tmp_path}"], capsys)
    assert f"{tmp_path}/winogavil/winogavil_dataset.csv" in err
    assert "huggingface-cli download --repo-type dataset nlphuji/winogavil" in err


def _write_rows(root: Path, rows: list[dict], header=("candidates", "cue", "associations", "ID")) -> Path:
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with (root / "winogavil_dataset.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (root / "winogavil_images").mkdir(exist_ok=True)
    for name in ["a", "b", "c", "d", "e"]:
        (root / "winogavil_images" / f"{name}.jpg").write_bytes(image_of("img001"))
    return root


GOOD = {
    "candidates": json.dumps(["a", "b", "c", "d", "e"]),
    "cue": "moon",
    "associations": json.dumps(["a"]),
    "ID": "1",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"associations": json.dumps(["z"])}, r"line 2: association \"z\" is not one of the candidates"),
        ({"candidates": "a, b, c"}, r"line 2: candidates is 'a, b, c', not a JSON list of image names"),
        ({"candidates": json.dumps(["a", "a", "b"])}, r"names \"a\" twice"),
        ({"associations": json.dumps([])}, r"associations is an empty list; every instance needs at least one"),
        ({"cue": "  "}, r"line 2: cue is \"  \", not a word"),
        ({"candidates": json.dumps(["a", "../b"])}, r"not an image name"),
    ],  # fmt: skip
)
def test_a_malformed_row_is_refused_naming_the_file_row_and_field(change, message, tmp_path):
    root = _write_rows(tmp_path / "w", [GOOD | change])
    with pytest.raises(ClipevalError, match=message):
        WinoGAViLSource(root)


def test_counts_that_disagree_with_the_lists_and_repeated_ids_are_refused(tmp_path):
    root = _write_rows(tmp_path / "w", [GOOD | {"num_candidates": "4"}], ("candidates", "cue", "associations", "ID",
                                                                           "num_candidates"))  # fmt: skip
    with pytest.raises(ClipevalError, match=r"num_candidates is \"4\" but the list holds 5"):
        WinoGAViLSource(root)
    root = _write_rows(tmp_path / "v", [GOOD, GOOD | {"cue": "sun"}])
    with pytest.raises(ClipevalError, match=r"ID 1 names more than one row"):
        WinoGAViLSource(root)
    root = _write_rows(tmp_path / "u", [GOOD], ("candidates", "cue", "ID"))
    with pytest.raises(ClipevalError, match=r"lacks the column\(s\) associations"):
        WinoGAViLSource(root)


def test_missing_images_are_listed_and_a_broken_zip_is_named(tmp_path, capsys):
    root = write_winogavil(tmp_path / "winogavil")
    gone = sorted((root / "winogavil_images").iterdir())[:2]
    for path in gone:
        path.unlink()
    with pytest.raises(ClipevalError, match=r"2 of the 30 candidate images of WinoGAViL not found") as info:
        WinoGAViLSource(root)
    assert str(gone[0]) in str(info.value)
    for path in (root / "winogavil_images").iterdir():
        path.unlink()
    (root / "winogavil_images").rmdir()
    (root / "winogavil_images.zip").write_bytes(b"not a zip")
    err = exit_2(["task=winogavil", f"task.root={root}"], capsys)
    assert "winogavil_images.zip cannot be read as a zip archive" in err


def test_an_unreadable_image_leaves_its_instances_out_with_a_note(tiny_open_clip, tmp_path):
    instances = make_instances()
    root = write_winogavil(tmp_path / "data" / "winogavil", instances)
    broken = instances[0]["candidates"][0]
    (root / "winogavil_images" / f"{broken}.jpg").write_bytes(b"not a jpeg")
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}"],
                         tmp_path / "run")  # fmt: skip
    affected = sum(broken in inst["candidates"] for inst in instances)
    avg = next(r for r in doc["records"] if r["metric"] == "avg_jaccard_score")
    assert avg["n"] == len(instances) - affected
    assert any(f"{affected} of the {len(instances)} instances" in n["message"] for n in doc["notes"])


def test_the_evaluator_refuses_data_without_instances_before_the_model_loads(image_folder, capsys):
    err = exit_2(["task=folder", f"task.root={image_folder}", "~task.evaluators",
                  "+task.evaluators={association: {_target_: clipeval.evaluators.association.Association}}"], capsys)  # fmt: skip
    assert "holds no association instances" in err and "task=winogavil" in err


def test_the_gate_pairs_the_per_instance_scores_of_two_runs(tiny_open_clip, tmp_path):
    """A golden file recorded from a run, compared with a run of another model: each Jaccard row is decided by a
    paired permutation test over the instances (not McNemar's, which needs right/wrong outcomes)."""
    from conftest import save_tiny_open_clip

    from clipeval.check.cli import main as check
    from clipeval.check.compare import compare
    from clipeval.check.documents import load_golden, load_run

    write_winogavil(tmp_path / "data" / "winogavil")
    data = ["task=winogavil", f"data_root={tmp_path / 'data'}"]
    run_in_process([*open_clip_overrides(tiny_open_clip), *data], tmp_path / "ref")
    other = dict(tiny_open_clip, pretrained=str(save_tiny_open_clip(tmp_path, seed=1)))
    run_in_process([*open_clip_overrides(other), *data], tmp_path / "cand")
    assert check(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")]) in (0, None)
    golden = load_golden(tmp_path / "golden.json")
    same = compare(golden, [load_run(tmp_path / "ref")])
    assert {row.verdict for row in same} == {"ok"} and len(same) == 7
    assert all("paired permutation p=1 (0 samples scored differently" in row.evidence for row in same)
    rows = compare(golden, [load_run(tmp_path / "cand")])
    assert all("paired permutation" in row.evidence and "McNemar" not in row.evidence for row in rows)
    assert any(row.candidate != row.record.value for row in rows)  # the other model scores differently


# ---------------------------------------------------------------- found by a breaker (each failed on the first version)


def test_a_damaged_member_of_the_zip_leaves_its_instances_out_with_a_note(tiny_open_clip, tmp_path):
    instances = make_instances()
    root = write_winogavil(tmp_path / "data" / "winogavil", instances, zipped=True)
    broken = instances[0]["candidates"][0]
    archive = (root / "winogavil_images.zip").read_bytes()
    at = archive.index(image_of(broken)) + 200  # stored, not deflated: the member's bytes are in the file as they are
    (root / "winogavil_images.zip").write_bytes(archive[:at] + bytes([archive[at] ^ 0xFF]) + archive[at + 1 :])
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}"],
                         tmp_path / "run")  # fmt: skip
    affected = sum(broken in inst["candidates"] for inst in instances)
    assert next(r for r in doc["records"] if r["metric"] == "avg_jaccard_score")["n"] == len(instances) - affected
    assert any(f"{affected} of the {len(instances)} instances" in n["message"] for n in doc["notes"])


@pytest.mark.parametrize("seed", range(12))
def test_identical_images_tie_exactly_so_the_tie_rule_holds(seed):
    # six candidates with one and the same feature (byte-identical images): whatever the rows, the wrong ones are
    # taken first; in float32 a matrix-vector product gave some identical rows results an ulp apart
    rng = np.random.default_rng(seed)
    row = rng.normal(size=32)
    row /= np.linalg.norm(row)
    cue = rng.normal(size=32)
    images = torch.tensor(np.tile(row, (6, 1)), dtype=torch.float32)
    answers = torch.tensor([False, False, False, True, True, True])
    sets = AssociationSet(torch.tensor(cue / np.linalg.norm(cue), dtype=torch.float32)[None],
                          [torch.arange(6)], [answers], ["0"], ["A cat"])  # fmt: skip
    assert jaccard_scores(images, sets).tolist() == [0.0]


def test_the_cue_is_prompted_as_written_spaces_included():
    # DataComp's get_clip_prompt does not strip the cue: "  apple" starts with a space, so its article is "A"
    assert datacomp_prompt("  apple") == "A   apple"


def test_a_group_may_not_redefine_datacomps_published_groups():
    with pytest.raises(ClipevalError, match=r"group '10-12' is DataComp's, of 10 and 12 candidates"):
        Association(groups={"10-12": [5, 6]})
    assert Association(groups={"10-12": [12, 10], "mine": [5, 6]}).groups == {"10-12": [10, 12], "mine": [5, 6]}


def test_instances_in_no_group_count_in_the_average_alone_with_a_note(tiny_open_clip, tmp_path):
    from association_data import SHAPES

    instances = make_instances([*SHAPES, (7, 2)])
    write_winogavil(tmp_path / "data" / "winogavil", instances)
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), "task=winogavil", f"data_root={tmp_path / 'data'}"],
                         tmp_path / "run")  # fmt: skip
    assert next(r for r in doc["records"] if r["metric"] == "avg_jaccard_score")["n"] == len(SHAPES) + 1
    assert any("1 instance(s) have a number of candidates in no group ([7])" in n["message"] for n in doc["notes"])


def test_csv_damage_and_layout_mistakes_are_named(tmp_path, capsys):
    root = _write_rows(tmp_path / "w", [GOOD])
    text = (root / "winogavil_dataset.csv").read_text()
    (root / "winogavil_dataset.csv").write_text(text.replace("moon", "mo\ron"))  # a stray CR in an unquoted field
    with pytest.raises(ClipevalError, match=r"winogavil_dataset.csv, line 2: the row has fewer fields than the header"):
        WinoGAViLSource(root)
    (root / "winogavil_dataset.csv").write_text("")
    with pytest.raises(ClipevalError, match=r"winogavil_dataset.csv is empty"):
        WinoGAViLSource(root)
    (root / "winogavil_dataset.csv").unlink()
    (root / "winogavil_dataset.csv").mkdir()
    with pytest.raises(ClipevalError, match=r"\(.*/w/winogavil_dataset.csv\) is a folder, not a file"):
        WinoGAViLSource(root)
    for bad in ("hf://datasets/nlphuji/winogavil", ""):
        err = exit_2(["task=winogavil", f"task.root={bad}"], capsys)
        assert f"task.root={bad!r}: WinoGAViL is read from a local folder" in err


def test_a_zip_of_another_folder_says_what_it_holds(tmp_path):
    import zipfile

    root = write_winogavil(tmp_path / "w", zipped=True)
    with zipfile.ZipFile(root / "winogavil_images.zip") as old, zipfile.ZipFile(root / "other.zip", "w") as new:
        for member in old.namelist():
            new.writestr(member.replace("winogavil_images/", "images/"), old.read(member))
    (root / "other.zip").replace(root / "winogavil_images.zip")
    with pytest.raises(ClipevalError, match=r"The archive's top level holds: images/\."):
        WinoGAViLSource(root)


def test_an_unreadable_image_is_named_by_its_file_in_the_note(tmp_path):
    root = write_winogavil(tmp_path / "w")
    source = WinoGAViLSource(root)
    (root / "winogavil_images" / f"{source.sample_id(0)}.jpg").write_bytes(b"not a jpeg")
    (item,) = [it for it in source.dataset(lambda image: image, 1)]
    assert f"winogavil_images/{source.sample_id(0)}.jpg" in item.error and "BytesIO" not in item.error
