"""One reader for the JSON files that arrive by pull request or sit in the model store
(champion.json, history.jsonl, compiled.json, contracts, runs.json): a regular file (no
symlink, directory, device or FIFO: git commits symlinks and a checkout can hold a
directory), under a size cap, strict JSON (orjson) nested at most a few levels. Anything
else is a RegistryError with one line naming the file and the rule."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import orjson

from churn.errors import RegistryError

MAX_JSON_BYTES = 16_000_000  # compiled.json of a wide linear model is under 1 MB
MAX_HISTORY_BYTES = 64_000_000  # ~100 000 decisions
MAX_DEPTH = 16  # the deepest registry file (a champion's previous.metrics) nests 3 levels

_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISLNK: "a symlink", stat.S_ISCHR: "a device",
          stat.S_ISBLK: "a device", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}  # fmt: skip


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def read_bytes(path: Path, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`; FileNotFoundError
    when it is absent (callers decide what absent means)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise RegistryError(f"{path}: is a symlink; registry files must be regular files "
                                "(restore it from git)") from None  # fmt: skip
        raise RegistryError(f"{path}: cannot be read ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RegistryError(f"{path}: is {_kind(info.st_mode)}, not a regular file "
                            "(restore it from git)")  # fmt: skip
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > max_bytes:
            raise RegistryError(f"{path}: {info.st_size} bytes, over the limit of {max_bytes}")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we read
        raise RegistryError(f"{path}: over the limit of {max_bytes} bytes")
    return data


def parse(data: bytes, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON (no NaN, valid UTF-8) nested at most `max_depth` levels."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson stops at 1 024 levels
            raise RegistryError(f"{where}: nested deeper than {max_depth} levels; restore it "
                                "from git") from None  # fmt: skip
        raise RegistryError(f"{where}: not valid JSON ({exc}); restore it from git") from None
    if depth(value) > max_depth:
        raise RegistryError(f"{where}: nested deeper than {max_depth} levels; "
                            "restore it from git")  # fmt: skip
    return value


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    return parse(read_bytes(path, max_bytes), str(path), max_depth)


def depth(value: Any) -> int:
    """How many containers deep `value` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def require_regular(path: Path) -> None:
    """Refuse a path that is not a regular file itself (a symlink, directory, FIFO…), for
    files read in a stream (model bytes) rather than whole."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise RegistryError(f"{path}: is {_kind(info.st_mode)}, not a regular file")


def exists(path: Path) -> bool:
    """Whether anything is at `path`, a dangling symlink included (Path.exists follows it)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True
