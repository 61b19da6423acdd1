"""Webdataset mirrors streamed from a URL or a ``pipe:`` command, against an HTTP server on 127.0.0.1.

The data key of a remote shard comes from the server's strong ETag (and size), from a commit pinned in the
URL, or from ``task.revision``; with none of them the source is refused, never keyed by its URL alone.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CLASSES, exit_2, make_wds, open_clip_overrides, run_in_process, synthetic_image
from http_server import serving
from torchvision import transforms

from clipeval.data import DataNotFound
from clipeval.data.remote import RemoteError
from clipeval.data.wds import WebDatasetSource
from clipeval.errors import ClipevalError

TO_TENSOR = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def server(tmp_path):
    """A server on 127.0.0.1 (a free port) serving ``server.folder``; stopped after the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serving(folder) as httpd:
        yield httpd


@pytest.fixture
def mirror(server):
    """A two-shard mirror on the server: (the local folder, its URL)."""
    return make_wds(server.folder / "wds"), f"{server.url}/wds"


def samples(source, limit=None):
    return [(it.sample_id, it.label, it.error, it.image) for it in source.dataset(TO_TENSOR, limit)]


def same_samples(a, b):
    assert [s[:3] for s in a] == [s[:3] for s in b]
    assert all(torch.equal(x[3], y[3]) for x, y in zip(a, b, strict=True))


def rewrite_shard(shard: Path, seed: int) -> None:
    """Replace ``shard`` by one with other images (same names, labels and size)."""
    import io
    import tarfile

    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for n, (member, data) in enumerate(members):
            if member.name.endswith(".png"):
                buf = io.BytesIO()
                synthetic_image(0, seed + n).save(buf, format="PNG")
                data = buf.getvalue()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_streamed_shards_give_the_samples_of_the_local_copy_keyed_by_strong_etags(mirror, caplog):
    local, url = mirror
    with caplog.at_level(logging.INFO, logger="clipeval.data.wds"):
        streamed = WebDatasetSource(url)
    assert "2 streamed shard(s) keyed by the server's strong ETags and sizes" in caplog.text
    assert streamed.classnames == WebDatasetSource(local).classnames == ["red square", "green circle", "blue triangle"]
    assert streamed.templates == WebDatasetSource(local).templates
    same_samples(samples(streamed), samples(WebDatasetSource(local)))
    assert len(samples(streamed, limit=3)) == 3
    assert streamed.describe().endswith("(2 shards, streamed)")


def test_a_mirror_list_that_is_not_text_is_refused_naming_its_url(mirror):
    local, url = mirror
    (local / "classnames.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ClipevalError, match=rf"^The webdataset's {url}/classnames.txt is not a text file \(byte"):
        WebDatasetSource(url)


def test_a_changed_shard_changes_the_key_and_the_same_bytes_keep_it(mirror, server):
    local, url = mirror
    key = WebDatasetSource(url).key
    shard = local / "test" / "1.tar"
    copy = shard.read_bytes()
    shard.write_bytes(copy)  # rewritten, same bytes: a new Last-Modified, the same ETag
    assert WebDatasetSource(url).key == key
    rewrite_shard(shard, seed=50)
    assert WebDatasetSource(url).key != key
    shard.write_bytes(copy)
    assert WebDatasetSource(url).key == key
    assert WebDatasetSource(url, split="test").key != WebDatasetSource(local).key  # not confused with a local copy


def test_a_shard_changed_while_the_run_reads_it_fails_the_run_instead_of_mixing_versions(mirror):
    local, url = mirror
    source = WebDatasetSource(url)
    rewrite_shard(local / "test" / "1.tar", seed=70)
    changed = rf"^Shard {url}/test/1.tar changed on the server while this run read it \(ETag .* became .*\)\. Run again"
    with pytest.raises(RemoteError, match=changed):
        samples(source)
    # the same one message from a DataLoader worker (torch rebuilds the exception from its traceback text)
    loader = torch.utils.data.DataLoader(source.dataset(TO_TENSOR, None), num_workers=2, collate_fn=list)
    with pytest.raises(RemoteError, match=changed) as info:
        list(loader)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("etags", ["none", "weak"])
def test_a_server_without_strong_etags_is_refused_unless_a_revision_is_given(mirror, server, etags, caplog):
    _, url = mirror
    server.etags = etags
    with pytest.raises(ClipevalError) as info:
        WebDatasetSource(url)
    message = str(info.value)
    assert message.startswith(f"Cannot tell whether {url}/test/0.tar has changed since features were cached: ")
    assert ("a weak ETag (W/" if etags == "weak" else "sends no ETag") in message
    assert "task.revision=NAME" in message and "resolve/<40-hex commit>" in message
    with caplog.at_level(logging.INFO, logger="clipeval.data.wds"):
        v1 = WebDatasetSource(url, revision="v1")
    assert "keyed by task.revision (given by the user)" in caplog.text
    assert v1.key != WebDatasetSource(url, revision="v2").key
    assert len(samples(v1)) == 12


def test_hugging_face_hub_urls_key_by_the_linked_etag_or_the_pinned_commit(mirror, server, caplog):
    local, _ = mirror
    hub = f"{server.url}/hub/main/wds"  # 302 with X-Linked-Etag / X-Linked-Size, like the hub for LFS files
    with caplog.at_level(logging.INFO, logger="clipeval.data.wds"):
        source = WebDatasetSource(hub)
    assert "keyed by the server's strong ETags" in caplog.text
    same_samples(samples(source), samples(WebDatasetSource(local)))
    key = source.key
    rewrite_shard(local / "test" / "0.tar", seed=90)
    assert WebDatasetSource(hub).key != key

    server.etags = "none"
    (server.folder / "resolve" / COMMIT).mkdir(parents=True)
    shutil.copytree(local, server.folder / "resolve" / COMMIT / "wds")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clipeval.data.wds"):
        pinned = WebDatasetSource(f"{server.url}/resolve/{COMMIT}/wds")
    assert "keyed by the commit pinned in the URL" in caplog.text
    assert len(samples(pinned)) == 12


def test_a_pipe_command_needs_a_revision_and_then_streams_the_same_samples(tmp_path):
    local = make_wds(tmp_path / "wds")
    root = f"pipe:cat {local}/{{path}}"
    with pytest.raises(ClipevalError, match=r"is a pipe: command, whose output cannot be checked .* task\.revision="):
        WebDatasetSource(root)
    with pytest.raises(ClipevalError, match=r"must contain \{path\}"):
        WebDatasetSource(f"pipe:cat {local}/test/0.tar", revision="v1")
    source = WebDatasetSource(root, revision="v1")
    assert source.classnames == WebDatasetSource(local).classnames
    same_samples(samples(source), samples(WebDatasetSource(local)))
    assert source.key != WebDatasetSource(root, revision="v2").key
    (local / "test" / "1.tar").unlink()
    with pytest.raises(RemoteError, match=r"The command `cat .*/test/1.tar` failed \(exit 1: cat: .*No such file"):
        samples(source)


def test_a_missing_mirror_or_shard_and_an_unreachable_server_name_the_url(mirror, server):
    local, url = mirror
    with pytest.raises(DataNotFound, match=rf"Looked in:\n  - {server.url}/nowhere/test/nshards.txt\n"):
        WebDatasetSource(f"{server.url}/nowhere")
    (local / "test" / "1.tar").unlink()
    with pytest.raises(DataNotFound, match=rf"Shard 'test/1.tar' .* not found\. Looked in:\n  - {url}/test/1.tar"):
        WebDatasetSource(url)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/wds"
    with pytest.raises(RemoteError, match=rf"Could not read {closed}/test/nshards.txt: .*refused"):
        WebDatasetSource(closed)


def test_a_server_that_refuses_head_requests_is_asked_with_get(mirror, server):
    local, url = mirror
    server.head = False
    same_samples(samples(WebDatasetSource(url)), samples(WebDatasetSource(local)))
    assert ("HEAD", "/wds/test/0.tar") in server.requests and ("GET", "/wds/test/0.tar") in server.requests


def test_a_shard_cut_short_fails_the_run_naming_it(mirror, server):
    _, url = mirror
    source = WebDatasetSource(url)
    server.cut = ["/test/1.tar"]
    with pytest.raises(RemoteError, match=rf"^Reading {url}/test/1.tar ended after \d+ of \d+ bytes"):
        samples(source)


def test_every_request_waits_at_most_the_timeout(mirror, server):
    _, url = mirror
    server.stall = ["/test/1.tar"]
    start = time.monotonic()
    with pytest.raises(RemoteError, match=rf"Could not read {url}/test/1.tar: no answer within 0.3 s \(task.timeout\)"):
        WebDatasetSource(url, timeout=0.3)
    assert time.monotonic() - start < 5
    with pytest.raises(ClipevalError, match=r"timeout=0 is not allowed: timeout must be a positive number"):
        WebDatasetSource(url, timeout=0)


def test_a_pipe_command_that_stalls_waits_at_most_the_timeout(tmp_path):
    local = make_wds(tmp_path / "wds", shards=1)
    stalls = f"pipe:case {{path}} in *.tar) sleep 2;; esac; cat {local}/{{path}}"
    source = WebDatasetSource(stalls, revision="v1", timeout=0.3)  # the text files come at once
    start = time.monotonic()
    with pytest.raises(RemoteError, match=r"^Reading `case test/0.tar in .*` stalled: no data for 0.3 s"):
        samples(source)
    assert time.monotonic() - start < 1.5
    with pytest.raises(RemoteError, match=r"^The command `sleep 2; cat .*nshards.txt` did not finish within 0.3 s"):
        WebDatasetSource(f"pipe:sleep 2; cat {local}/{{path}}", revision="v1", timeout=0.3)


def test_a_streamed_run_gives_the_features_and_records_of_a_local_run_and_hits_the_cache_again(
    tiny_open_clip, mirror, server, tmp_path, caplog
):
    local, url = mirror
    docs, logs = {}, {}
    for name, root in (("local", local), ("remote", url), ("again", url)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            overrides = open_clip_overrides(tiny_open_clip, task="wds", **{"task.root": str(root)})
            docs[name] = run_in_process(overrides, tmp_path / name)
        logs[name] = caplog.text
    assert "cache miss" in logs["remote"] and "cache miss" not in logs["again"]
    features = [torch.load(p, weights_only=True) for p in sorted((tmp_path / "cache" / "features").rglob("*.pt"))]
    assert len(features) == 2  # one local entry, one remote (the keys differ), the second remote run a hit
    for field in ("features", "labels"):
        assert torch.equal(features[0][field], features[1][field])
    assert features[0]["ids"] == features[1]["ids"]
    assert (
        docs["remote"]["records"] == docs["local"]["records"] == docs["again"]["records"] and docs["local"]["records"]
    )
    predictions = {name: sorted((tmp_path / name / "predictions").rglob("*.parquet")) for name in docs}
    assert len(predictions["local"]) == len(predictions["remote"]) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(predictions["local"][0]), pd.read_parquet(predictions["remote"][0]))


def test_the_cli_refuses_an_unpinned_remote_mirror_with_exit_2(mirror, server, tiny_open_clip, capsys, tmp_path):
    _, url = mirror
    server.etags = "none"
    err = exit_2(open_clip_overrides(tiny_open_clip, task="wds", **{"task.root": url}), capsys)
    assert f"Cannot tell whether {url}/test/0.tar has changed" in err


# --- Hugging Face datasets, streamed (task=hf_stream) -------------------------------------------------------------


@pytest.fixture
def parquet(server):
    """A 9-row dataset (Image, ClassLabel) as a parquet file on the server, and a local copy: (local path, URL)."""
    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=CLASSES)})
    rows = {"img": [synthetic_image(i % 3, i) for i in range(9)], "y": [i % 3 for i in range(9)]}
    file = server.folder / "test-00000.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(file)
    local = server.folder.parent / "local" / "test-00000.parquet"
    local.parent.mkdir()
    shutil.copy(file, local)
    return local, f"{server.url}/test-00000.parquet"


def test_a_streamed_parquet_url_gives_the_rows_of_the_local_file_keyed_by_its_etag(parquet, server, caplog):
    from clipeval.data.hf import HFDatasetSource
    from clipeval.data.hf_stream import HFStreamingSource

    local, url = parquet
    with caplog.at_level(logging.INFO, logger="clipeval.data.hf_stream"):
        streamed = HFStreamingSource(url)
    assert "streamed, keyed by the server's strong ETags and sizes" in caplog.text
    assert (streamed.image_key, streamed.label_key, streamed.classnames) == ("img", "y", CLASSES)
    same_samples(samples(streamed), samples(HFDatasetSource(str(local))))
    assert len(samples(streamed, limit=4)) == 4

    key = streamed.key
    server.folder.joinpath("test-00000.parquet").write_bytes(local.read_bytes())  # same bytes: same key
    assert HFStreamingSource(url).key == key
    import pyarrow.parquet as pq

    table = pq.read_table(local)
    pq.write_table(table.slice(0, 8), server.folder / "test-00000.parquet")  # a row fewer: another key
    assert HFStreamingSource(url).key != key


def test_a_parquet_file_changed_while_streamed_fails_the_run(parquet, server):
    import pyarrow.parquet as pq

    from clipeval.data.hf_stream import HFStreamingSource

    local, url = parquet
    source = HFStreamingSource(url)
    pq.write_table(pq.read_table(local).slice(1), server.folder / "test-00000.parquet")
    with pytest.raises(RemoteError, match=rf"^{url} changed on the server while this run read it"):
        samples(source)


def test_streaming_without_a_validator_or_a_commit_is_refused(parquet, server):
    from clipeval.data.hf_stream import HFStreamingSource

    _, url = parquet
    server.etags = "none"
    with pytest.raises(ClipevalError, match=rf"^Cannot tell whether {url} has changed since features were cached"):
        HFStreamingSource(url)
    assert len(samples(HFStreamingSource(url, revision="v1"))) == 9
    with pytest.raises(ClipevalError, match=r"hub dataset 'someone/data' needs task.revision=<commit> .* not 'main'"):
        HFStreamingSource("someone/data", revision="main")
    with pytest.raises(DataNotFound, match=rf"the Hugging Face hub, at commit {COMMIT}\nLoading failed with: "):
        HFStreamingSource("someone/data", revision=COMMIT)  # pinned, but the hub is out of reach (offline here)
    with pytest.raises(DataNotFound, match=rf"Parquet file {server.url}/absent.parquet not found"):
        HFStreamingSource(f"{server.url}/absent.parquet")
    with pytest.raises(
        ClipevalError, match=r"path='/some/file.parquet' is not allowed: .* for local files use task=hf"
    ):
        HFStreamingSource("/some/file.parquet")


def test_the_hf_stream_task_runs_like_the_hf_task_on_the_same_rows(tiny_open_clip, parquet, tmp_path):
    local, url = parquet
    local_doc = run_in_process(
        open_clip_overrides(tiny_open_clip, task="hf", **{"task.path": str(local)}), tmp_path / "a"
    )
    streamed_doc = run_in_process(
        open_clip_overrides(tiny_open_clip, task="hf_stream", **{"task.path": url}), tmp_path / "b"
    )
    strip = lambda doc: [{**r, "task": None, "samples": None} for r in doc["records"]]  # noqa: E731
    assert strip(streamed_doc) == strip(local_doc) and local_doc["records"]
    frames = [pd.read_parquet(next((tmp_path / run / "predictions").rglob("*.parquet"))) for run in ("a", "b")]
    pd.testing.assert_frame_equal(frames[0], frames[1])  # ids, labels and ranked predictions of every row


def test_a_stalled_parquet_stream_waits_at_most_the_timeout(parquet, server):
    from clipeval.data.hf_stream import HFStreamingSource

    _, url = parquet
    server.stall_get = ["/test-00000.parquet"]
    start = time.monotonic()
    with pytest.raises(RemoteError, match=rf"^Could not open {url} for streaming .* task.timeout=0.5 s"):
        HFStreamingSource(url, timeout=0.5)
    assert time.monotonic() - start < 10
