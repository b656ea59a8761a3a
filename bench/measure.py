"""What every benchmark section shares: running a child process and measuring it, page-cache
control, and the rows of the results table."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# Not resolved: the venv's python is a symlink, and resolving it would leave the venv.
PYTHON = Path(sys.executable)
OWLVIT = PYTHON.parent / "owlvit"
COMMAND_TIMEOUT_S = 900
MIB = 1 << 20


class BenchError(RuntimeError):
    """A measured command failed; the section reports it instead of a number."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    max_rss: int  # bytes
    cpu: float = 0.0  # user + system seconds of the child: what load from others cannot inflate


def run_measured(
    cmd: Sequence[str | Path],
    stdout: Path | None = None,
    ok_codes: Sequence[int] = (0,),
    env: dict[str, str] | None = None,
) -> Sample:
    """Wall time and peak RSS of one child process.

    `os.wait4` on the child's pid returns that child's own rusage, so no wrapper process or
    /usr/bin/time is needed. Its stdout goes to `stdout` (or nowhere), stderr to a file that
    is quoted on failure.
    """
    args = [str(part) for part in cmd]
    err_path = OUT / "last-stderr.txt"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        err = stack.enter_context(err_path.open("wb"))
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, env=env)
        killer = threading.Timer(COMMAND_TIMEOUT_S, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        killer.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped; Popen must not wait
    if code not in ok_codes:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"`{' '.join(args[:3])} …` exited {code}: {' / '.join(tail)}")
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(seconds, usage.ru_maxrss * 1024, cpu)  # Linux reports KiB


def settle() -> None:
    """Flush dirty pages (earlier outputs) so their write-back does not land in the next
    measurement."""
    os.sync()


def evict(path: Path) -> None:
    """Make `path` cold: drop its (clean) pages from the page cache. Unlike
    /proc/sys/vm/drop_caches this needs no root and leaves Python's own libraries cached, so
    only the checkpoint read is cold, the same for every command. A directory: every file."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            evict(file)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    """Read `path` once so every measured command finds it in the page cache."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            warm(file)
        return
    with path.open("rb") as handle:
        while handle.read(8 * MIB):
            pass


def prepare(path: Path, cache: str) -> None:
    settle()
    if cache == "cold":
        evict(path)
    else:
        warm(path)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Row:
    """One line of the results table: a median, its baseline's median and a target."""

    name: str
    seconds: float | None
    baseline: tuple[str, float] | None = None  # (what, median seconds)
    max_rss: int | None = None
    target: tuple[str, bool] | None = None  # (stated target, met)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.seconds is None or not self.baseline or not self.baseline[1]:
            return None
        return self.seconds / self.baseline[1]

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.target[1]


@dataclass
class Series:
    """Samples of one command across runs."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def max_rss(self) -> int:
        return max(s.max_rss for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)


def failed_row(name: str, error: Exception) -> Row:
    return Row(name, None, target=("runs", False), note=f"failed: {error}")


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def fmt_rss(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:,.0f} MiB"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| measurement | median | baseline | baseline median | ratio | peak RSS | target | met |",
        "|---|---:|---|---:|---:|---:|---|:-:|",
    ]
    for r in rows:
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}×"
        met = {True: "yes", False: "**no**", None: ""}[r.ok]
        name = f"{r.name} ({r.note})" if r.note else r.name
        what, base = r.baseline or ("", None)
        lines.append(
            f"| {name} | {fmt_seconds(r.seconds)} | {what} | {fmt_seconds(base)} | {ratio} | "
            f"{fmt_rss(r.max_rss)} | {r.target[0] if r.target else ''} | {met} |"
        )
    return "\n".join(lines)


def row_from_dict(item: dict) -> Row:
    """A row from a section that reports plain dicts (photo.py, detect_bench.py)."""
    baseline = None
    if item.get("baseline_name") and item.get("baseline_median_s") is not None:
        baseline = (item["baseline_name"], item["baseline_median_s"])
    target = (item["target"], bool(item["met"])) if item.get("target") else None
    rss = item.get("peak_rss_mib")
    first = item.get("first_s")
    note = f"first call {first:.2f} s" if first is not None else ""
    return Row(item["name"], item["median_s"], baseline, rss and int(rss * MIB), target, note)


def timed(fn: Callable[[], Any], repeats: int = 1) -> float:
    """Median wall time of `repeats` in-process calls of `fn` (the workers' measurements)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
