"""Webdataset mirrors read over the network: ``http(s)://`` URLs (``hf://datasets/<owner>/<name>[@<revision>]`` is
the Hugging Face hub's URL of that dataset repository) and ``pipe:`` commands.

A remote shard cannot be hashed before it is read, so its part of the data key comes from one of three rules,
tried in this order (the rule used is logged at INFO):

``etag``
    The server's strong ETag for the shard (``X-Linked-Etag`` first, as the Hugging Face hub sends for LFS
    files: the sha256 of their content), with its size and the URL. A strong ETag changes whenever the bytes
    do. Weak ETags (``W/"..."``) and ``Last-Modified`` are not enough: they name "equivalent" content, or the
    second of the last write (a same-second or ``cp -p`` replacement keeps them), so they are never used.
``pin``
    A URL pinned to an immutable revision: a Hugging Face ``.../resolve/<40-hex commit>/`` URL.
``revision``
    ``revision=NAME`` given by the user, who promises to change it whenever the data changes. The only rule
    for ``pipe:`` commands, whose output cannot be inspected before it is read; also accepted for servers
    that send no strong ETag.

Without one of them the source is refused (exit 2): a key made of URLs alone would serve stale features after
the data changed. While a shard is read, the response must still carry the ETag the key was made from, and
as many bytes as announced; a shard that changed meanwhile fails the run instead of mixing two versions.

Every HTTP request and every read waits at most ``timeout`` seconds; ``pipe:`` commands likewise (the small
text files' commands in all, the shard streams between two reads).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import select
import shlex
import signal
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any

from clipeval.config.files import decode_text
from clipeval.data.base import DataNotFound
from clipeval.errors import ClipevalError, OptionError

log = logging.getLogger(__name__)

HF_PIN = re.compile(r"/resolve/([0-9a-f]{40})/")
RULE_NAMES = {
    "etag": "the server's strong ETags and sizes",
    "pin": "the commit pinned in the URL",
    "revision": "task.revision (given by the user)",
}
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
TEXT_LIMIT = 1 << 20  # nshards.txt, classnames.txt, templates: small files


def is_remote(root: Any) -> bool:
    """Whether a webdataset ``root`` names data to stream (a URL, ``hf://`` or a ``pipe:`` command), not a local
    folder."""
    return isinstance(root, str) and root.startswith(("http://", "https://", "pipe:", "hf://"))


HF_ROOT = re.compile(r"hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?/?(.*)")


def hub_url(root: str) -> str:
    """``hf://datasets/<owner>/<name>[@<revision>][/<folder>]`` as the hub's download URL of that folder,
    ``https://huggingface.co/datasets/<owner>/<name>/resolve/<revision, else main>/<folder>/``; other roots as
    they are. A 40-hex revision pins the commit (the ``pin`` rule); ClipevalError for another ``hf://`` form."""
    if not root.startswith("hf://"):
        return root
    match = HF_ROOT.fullmatch(root)
    if match is None:
        raise ClipevalError(
            f"task.root={root!r}: an hf:// root is hf://datasets/<owner>/<name>[@<revision>][/<folder>], e.g. "
            "hf://datasets/clip-benchmark/wds_cars@<40-hex commit>."
        )
    repo, revision, folder = match.groups()
    folder = folder.strip("/")
    return f"https://huggingface.co/datasets/{repo}/resolve/{revision or 'main'}/" + (f"{folder}/" if folder else "")


class RemoteError(ClipevalError):
    """Reading remote data failed; the message names the URL or command.

    Keeps its message when re-raised from a DataLoader worker (torch rebuilds it from its traceback text) and
    when webdataset appends its stream and URL to ``args``.
    """

    def __init__(self, message: str):
        marker = f"{__name__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:  # rebuilt by torch from a worker's traceback
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Validator:
    """What keys one remote file: the rule, its value (ETag, commit, revision) and the size when known."""

    rule: str
    value: str
    size: int | None

    def payload(self) -> list:
        return [self.rule, self.value, self.size]


class Location:
    """Where a remote mirror lives: reads its small text files, keys its shards, opens them as streams."""

    root: str

    def read_text(self, rel: str, required: bool) -> str | None: ...

    def validator(self, rel: str) -> Validator: ...

    def open(self, rel: str, expected: Validator) -> CheckedStream: ...

    def describe(self, rel: str) -> str: ...

    def validators(self, rels: list[str]) -> list[Validator]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(rels) or 1)) as pool:
            return list(pool.map(self.validator, rels))


def location(root: str, revision: str | None, timeout: float) -> Location:
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise OptionError("timeout", timeout, "a positive number of seconds (each request and read waits that long)")
    if root.startswith("pipe:"):
        return PipeLocation(root, revision, float(timeout))
    return HttpLocation(hub_url(root), revision, float(timeout))


# --- HTTP ---------------------------------------------------------------------------------------------------------


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by hand, so that the validators of the URL the user named are seen."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_KeepRedirects)


class HttpLocation(Location):
    def __init__(self, root: str, revision: str | None, timeout: float):
        self.root = root if root.endswith("/") else root + "/"
        self.revision, self.timeout = revision, timeout

    def url(self, rel: str) -> str:
        return self.root + urllib.parse.quote(rel)

    def describe(self, rel: str) -> str:
        return self.url(rel)

    def read_text(self, rel: str, required: bool) -> str | None:
        url = self.url(rel)
        try:
            _, response = request(url, "GET", self.timeout)
        except NotThere:
            if required:
                raise DataNotFound(
                    f"'{rel}' of the webdataset mirror {self.root}",
                    [url],
                    "Check task.root: it should be the URL of the folder holding <split>/nshards.txt (for a "
                    "Hugging Face dataset repository: https://huggingface.co/datasets/<owner>/<name>/resolve/<rev>/).",
                ) from None
            return None
        with response:
            data = _read(response, TEXT_LIMIT + 1, url, self.timeout)
        if len(data) > TEXT_LIMIT:
            raise RemoteError(f"{url} is larger than {TEXT_LIMIT} bytes; it should be a small text file.")
        return decode_text(data, f"The webdataset's {url}")

    def validator(self, rel: str) -> Validator:
        url = self.url(rel)
        try:
            headers, response = request(url, "HEAD", self.timeout)
        except NotThere:
            raise DataNotFound(
                f"Shard '{rel}' of the webdataset mirror {self.root}",
                [url],
                "The split's nshards.txt names more shards than the server has: check task.root and the mirror.",
            ) from None
        response.close()
        return validator(url, headers, self.revision)

    def open(self, rel: str, expected: Validator) -> CheckedStream:
        url = self.url(rel)
        try:
            headers, response = request(url, "GET", self.timeout)
        except NotThere:
            raise RemoteError(f"Shard {url} is gone from the server (HTTP 404) since the run started.") from None
        etag = _etag(headers)
        if expected.rule == "etag" and etag != expected.value:
            response.close()
            raise RemoteError(
                f"Shard {url} changed on the server while this run read it (ETag {expected.value} became {etag}). "
                "Run again to read the new version."
            )
        return CheckedStream(response, url, expected.size, self.timeout)


def validator(url: str, headers: Message, revision: str | None) -> Validator:
    """The rule that keys the file at ``url`` (its response's ``headers``); ClipevalError when none applies."""
    etag, size = _etag(headers), _size(headers)
    if etag and not etag.startswith("W/"):
        return Validator("etag", etag, size)
    pin = HF_PIN.search(url)
    if pin:
        return Validator("pin", pin.group(1), size)
    if revision is not None:
        return Validator("revision", str(revision), size)
    got = f"a weak ETag ({etag})" if etag else "no ETag"
    raise ClipevalError(
        f"Cannot tell whether {url} has changed since features were cached: the server sends {got}, and "
        "neither the URL nor task.revision pins a revision (Last-Modified and sizes are not trusted: a "
        "same-second replacement keeps them). Use a URL pinned to a commit (on the Hugging Face hub: "
        ".../resolve/<40-hex commit>/...), or set task.revision=NAME, a name you change whenever the data "
        "changes, or serve the files with strong ETags."
    )


def request(url: str, method: str, timeout: float) -> tuple[Message, Any]:
    """The final response to ``method url`` after redirects, and the headers that validate it: those of the
    first response in the chain that carries an ETag (the URL's own, for the Hugging Face hub), else the
    final one's. HTTP errors and network failures are :class:`RemoteError` naming ``url``."""
    validating = None
    target = url
    for _ in range(MAX_REDIRECTS + 1):
        req = urllib.request.Request(
            target, method=method, headers={"Accept-Encoding": "identity", "User-Agent": "clipeval"}
        )
        try:
            response = _OPENER.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in REDIRECTS and exc.headers.get("Location"):
                if validating is None and _etag(exc.headers):
                    validating = exc.headers
                target = urllib.parse.urljoin(target, exc.headers["Location"])
                continue
            if exc.code in (404, 410):
                raise NotThere(url) from None
            if method == "HEAD" and exc.code in (403, 405, 501):  # HEAD refused (or a URL signed for GET only)
                return request(url, "GET", timeout)
            raise RemoteError(f"Could not read {url}: the server answered HTTP {exc.code} {exc.reason}.") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                reason = f"no answer within {timeout:g} s (task.timeout)"
            raise RemoteError(
                f"Could not read {url}: {reason}. Check the URL and that this machine reaches the server."
            ) from None
        return (validating or response.headers), response
    raise RemoteError(f"Could not read {url}: more than {MAX_REDIRECTS} redirects.")


class NotThere(Exception):
    """HTTP 404 or 410."""


def _etag(headers: Message) -> str | None:
    return headers.get("X-Linked-Etag") or headers.get("ETag")


def _size(headers: Message) -> int | None:
    raw = headers.get("X-Linked-Size") or headers.get("Content-Length")
    return int(raw) if raw is not None and raw.strip().isdigit() else None


def _read(stream: Any, size: int, what: str, timeout: float) -> bytes:
    try:
        return stream.read(size)
    except TimeoutError:
        raise RemoteError(f"Reading {what} stalled: no data for {timeout:g} s (task.timeout).") from None
    except OSError as exc:
        raise RemoteError(f"Reading {what} failed: {exc}.") from None


# --- pipe: --------------------------------------------------------------------------------------------------------


class PipeLocation(Location):
    """``pipe:COMMAND`` with ``{path}`` standing for a file of the mirror (``test/0.tar``, ``classnames.txt``);
    the command writes that file to its standard output."""

    def __init__(self, root: str, revision: str | None, timeout: float):
        self.root, self.command, self.timeout = root, root.removeprefix("pipe:"), timeout
        if "{path}" not in self.command:
            raise ClipevalError(
                f"task.root={root!r}: a pipe: command must contain {{path}}, which stands for each file of the "
                "mirror (e.g. pipe:aws s3 cp s3://bucket/wds_cifar10/{path} -)."
            )
        if revision is None:
            raise ClipevalError(
                f"task.root={root!r} is a pipe: command, whose output cannot be checked for changes before it is "
                "read. Set task.revision=NAME, a name you change whenever the data behind the command changes "
                "(features cached under one revision are reused for it)."
            )
        self.revision = str(revision)

    def argv(self, rel: str) -> str:
        return self.command.replace("{path}", shlex.quote(rel))

    def describe(self, rel: str) -> str:
        return f"pipe:{self.argv(rel)}"

    def read_text(self, rel: str, required: bool) -> str | None:
        cmd = self.argv(rel)
        proc = _spawn(cmd)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _end(proc)
            raise RemoteError(f"The command `{cmd}` did not finish within {self.timeout:g} s (task.timeout).") from None
        if proc.returncode != 0:
            if not required:
                log.info("No %s from `%s` (exit %d): not used", rel, cmd, proc.returncode)
                return None
            raise DataNotFound(
                f"'{rel}' of the webdataset mirror {self.root}",
                [f"the output of `{cmd}` (exit {proc.returncode}: {_tail(err)})"],
                "Check the command in task.root: with {path} replaced it should write that file to stdout.",
            )
        return decode_text(out, f"The output of `{cmd}`")

    def validator(self, rel: str) -> Validator:
        return Validator("revision", self.revision, None)

    def open(self, rel: str, expected: Validator) -> CheckedStream:
        cmd = self.argv(rel)
        proc = _spawn(cmd)
        return CheckedStream(proc.stdout, f"`{cmd}`", None, self.timeout, proc)


def _spawn(cmd: str) -> subprocess.Popen:
    """``cmd`` in a shell of its own process group, so that :func:`_end` stops what it started too."""
    return subprocess.Popen(
        cmd,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _end(proc: subprocess.Popen) -> None:
    """Stop ``proc``'s process group (the shell and the commands it runs) if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text[-300:] if text else "no message"


# --- reading ------------------------------------------------------------------------------------------------------


class CheckedStream:
    """A shard's bytes as a file object for ``tarfile``; every read waits at most ``timeout`` seconds.

    :meth:`finish` reads what tarfile leaves after the end-of-archive blocks and checks the whole: as many
    bytes as the server announced, and a command that exited 0.
    """

    def __init__(
        self, raw: IO[bytes], what: str, size: int | None, timeout: float, proc: subprocess.Popen | None = None
    ):
        self.raw, self.what, self.size, self.timeout, self.proc = raw, what, size, timeout, proc
        self.count = 0

    def _chunk(self, n: int) -> bytes:
        if self.proc is not None:  # a pipe has no socket timeout: wait for data with select
            ready, _, _ = select.select([self.raw], [], [], self.timeout)
            if not ready:
                raise RemoteError(
                    f"Reading {self.what} stalled: no data for {self.timeout:g} s (task.timeout)."
                ) from None
            return self.raw.read1(n)
        return _read(self.raw, n, self.what, self.timeout)

    def read(self, n: int = -1) -> bytes:
        parts, want = [], n
        while want != 0:
            data = self._chunk(want if want > 0 else 1 << 20)
            if not data:
                self._at_end()
                break
            parts.append(data)
            self.count += len(data)
            want = want - len(data) if want > 0 else want
        return b"".join(parts)

    def _at_end(self) -> None:
        if self.size is not None and self.count != self.size:
            raise RemoteError(
                f"Reading {self.what} ended after {self.count} of {self.size} bytes (the connection was cut, or "
                "the file changed). Run again."
            )
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                stderr = self.proc.stderr.read() if code is not None and self.proc.stderr else b""
                raise RemoteError(
                    f"The command {self.what} failed (exit {code}: {_tail(stderr)}); its shard is not read whole."
                )

    def finish(self) -> None:
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        if self.proc is not None:
            _end(self.proc)
        else:
            self.raw.close()

    def __enter__(self) -> CheckedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_samples(loc: Location, shards: list[tuple[str, Validator]]) -> Iterator[dict[str, Any]]:
    """The samples of ``shards`` (this DataLoader worker's share), each shard checked whole once read."""
    import torch
    from webdataset.tariterators import group_by_keys, tar_file_expander

    worker = torch.utils.data.get_worker_info()
    mine = shards if worker is None else shards[worker.id :: worker.num_workers]
    for rel, expected in mine:
        with loc.open(rel, expected) as stream:
            try:
                yield from group_by_keys(tar_file_expander([dict(url=rel, stream=stream)]))
            except tarfile.TarError as exc:
                raise RemoteError(
                    f"Shard {loc.describe(rel)} is damaged: it is not a readable tar stream ({exc.args[0]})."
                ) from None
            stream.finish()


def shard_stem(url: str) -> str:
    """``0`` for ``test/0.tar``, a local path or a URL alike."""
    return os.path.splitext(url.rsplit("/", 1)[-1])[0]
