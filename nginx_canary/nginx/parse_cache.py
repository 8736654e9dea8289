"""A parse cache: crossplane trees of single files, kept as JSON and reused while a file is unchanged."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import stat
import tempfile
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

from nginx_canary.fsutil import TEMP_SUFFIX, discard

#: A crossplane tree as the cache keeps it: pruned by :mod:`nginx_canary.nginx.conf` to what the model reads.
Tree = List[Dict[str, Any]]


def _valid_tree(tree: Any) -> bool:
    """Whether ``tree`` has the shape of a :data:`Tree` (a cache file is data from disk, checked before use)."""
    pending = [tree]
    while pending:
        block = pending.pop()
        if type(block) is not list:
            return False
        for stmt in block:
            if type(stmt) is not dict:
                return False
            args = stmt.get("args")
            if type(stmt.get("directive")) is not str or type(stmt.get("line")) is not int or type(args) is not list:
                return False
            for arg in args:
                if type(arg) is not str:
                    return False
            if "block" in stmt:
                pending.append(stmt["block"])
    return True


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Decoding many small dicts triggers the cyclic GC over and over; they hold no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ParseCache:
    """crossplane trees of single files, reused while a file's inode, size and mtime stay the same.

    Kept as JSON, which is data only: a cache file is never code. A cache that
    cannot be read, is not valid, or cannot be written is ignored: it only
    saves time. The file is written under a random temporary name
    (``mkstemp``: ``O_EXCL|O_NOFOLLOW``; named like
    :func:`~nginx_canary.fsutil.atomic_write`'s, so a leftover one is swept)
    and renamed into place; it is read without following a symlink.
    """

    #: The ``version`` key of the file; bump it when what ``nginx.conf._prune`` keeps changes.
    VERSION = 5

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._entries: Dict[str, Tuple[Tuple[int, int, int, int], Tree]] = {}
        self._dirty = False
        if path:
            self._entries = self._load(path)

    @staticmethod
    def _load(path: str) -> Dict[str, Tuple[Tuple[int, int, int, int], Tree]]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return {}
                with _gc_paused():
                    loaded = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(loaded, dict) or loaded.get("version") != ParseCache.VERSION \
                or not isinstance(loaded.get("entries"), dict):
            return {}
        entries: Dict[str, Tuple[Tuple[int, int, int, int], Tree]] = {}
        for file, entry in loaded["entries"].items():
            # A file's tree is checked when it is used (get), so a large cache is not walked twice.
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and len(entry[0]) == 4 \
                    and all(type(n) is int for n in entry[0]):
                entries[file] = (tuple(entry[0]), entry[1])  # type: ignore[assignment]
        return entries

    @staticmethod
    def key(path: str) -> Tuple[int, int, int, int]:
        """What tells a file's versions apart: device, inode, size, mtime. Raises OSError (cannot stat)."""
        st = os.stat(path)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, path: str) -> Optional[Tree]:
        entry = self._entries.get(path)
        if entry is None:
            return None
        try:
            if entry[0] != self.key(path):
                return None
        except OSError:
            return None
        if not _valid_tree(entry[1]):
            del self._entries[path]
            return None
        return entry[1]

    def put(self, path: str, key: Tuple[int, int, int, int], tree: Tree) -> None:
        self._entries[path] = (key, tree)
        self._dirty = True

    def save(self, background: bool = False) -> None:
        """Write the cache if it changed; with ``background``, in a thread the interpreter waits for at exit."""
        if not self.path or not self._dirty:
            return
        if background:
            # Overlaps with nginx -t and the reload, which leave this process waiting.
            try:
                threading.Thread(target=self._write, name="parse-cache-save").start()
                return
            except RuntimeError:
                # "can't start new thread" (task limit reached): a cache is not
                # worth failing a change or a rollback for; write it here instead.
                pass
        self._write()

    def _write(self) -> None:
        assert self.path is not None
        data = json.dumps({"version": self.VERSION, "entries": self._entries}, separators=(",", ":")).encode()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix="." + os.path.basename(self.path) + ".",
                                       suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
            tmp = None
            self._dirty = False
        except OSError:
            pass
        finally:
            discard(tmp)
