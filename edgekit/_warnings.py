"""Warnings as part of a result: one readable line each, apart from third-party chatter.

:func:`collect` records the Python warnings raised inside it.  Those raised
by edgekit's own code (its source folders) are the result's warnings, one
line each, no source line; the rest (a library's DeprecationWarning, a
converter's UserWarning) are *chatter*, kept for ``--debug``.

:func:`capture_stderr` also catches what native libraries write straight
to file descriptor 2 (onnxruntime's "Unable to fuse" lines, the QNN SDK's
``LIBNATIVE``), while Python-level writes to ``sys.stderr`` (progress
bars, the CLI's own lines) still reach the terminal.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple


class BuildWarning(UserWarning):
    """A warning a build recorded in its result (re-raised by ``edgekit.build``)."""


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def _edgekit_roots() -> Tuple[str, ...]:
    """Source folders of edgekit and its build side (installed under edgekit.* by package-dir)."""
    import edgekit

    roots = {str(Path(p).resolve()) for p in edgekit.__path__}
    for sub in ("targets", "quantize", "device_farm"):
        try:
            mod = __import__(f"edgekit.{sub}", fromlist=["__path__"])
        except ImportError:
            continue
        roots.update(str(Path(p).resolve()) for p in getattr(mod, "__path__", []))
    return tuple(sorted(roots))


class Collected:
    """What :func:`collect` caught so far: edgekit's warnings and the third-party chatter."""

    def __init__(self, records: List[warnings.WarningMessage], roots: Sequence[str]) -> None:
        self._records = records
        self._roots = roots

    def _sorted(self) -> Tuple[List[str], List[str]]:
        ours: List[str] = []
        chatter: List[str] = []
        for w in self._records:
            line = one_line(w.message)
            if issubclass(w.category, UserWarning) and _is_ours(w.filename, self._roots):
                if line and line not in ours:
                    ours.append(line)
            else:
                text = f"{w.category.__name__}: {line}"
                if text not in chatter:
                    chatter.append(text)
        return ours, chatter

    @property
    def warnings(self) -> List[str]:
        """edgekit's warnings, one readable line each, in order, without repeats."""
        return self._sorted()[0]

    @property
    def chatter(self) -> List[str]:
        """Third-party warnings (for --debug)."""
        return self._sorted()[1]


def _is_ours(filename: str, roots: Sequence[str]) -> bool:
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return any(path == r or path.startswith(r + os.sep) for r in roots)


@contextlib.contextmanager
def collect() -> Iterator[Collected]:
    """Record every Python warning raised inside (nothing is shown); read them from the yielded object."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield Collected(caught, _edgekit_roots())


@contextlib.contextmanager
def capture_stderr(sink: List[str], *, until_exit: bool = False) -> Iterator[None]:
    """Send native writes to fd 2 into ``sink`` (one entry per non-empty line); Python's sys.stderr stays visible.

    ``until_exit``: keep fd 2 away from the terminal afterwards too, for native
    libraries that write while they unload at process exit (the QNN SDK's
    ``LIBNATIVE`` line); sys.stderr keeps writing to the real stderr.  For a
    command-line process only.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real fd (pytest capture, notebooks): nothing to catch
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    tmp = tempfile.TemporaryFile(mode="w+b")
    old_stderr = sys.stderr
    visible = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                        errors="replace")
    os.dup2(tmp.fileno(), fd)
    sys.stderr = visible
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            visible.flush()
        if until_exit:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        else:
            sys.stderr = old_stderr
            os.dup2(saved, fd)
            visible.close()
        os.close(saved)
        tmp.seek(0)
        for raw in tmp.read().decode("utf-8", "replace").splitlines():
            if raw.strip():
                sink.append(raw.rstrip())
        tmp.close()
