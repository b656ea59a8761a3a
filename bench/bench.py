"""Performance measurements: convert, inspect, --help and verify (the table in bench/README.md).

Every figure is a median over runs, set beside a baseline measured in the same run, because
absolute seconds on a shared 2-core machine mean little while ratios survive the noise. Each
measured command runs as its own child process; its peak RSS comes from `os.wait4`, which
reports that one child's rusage (RUSAGE_CHILDREN would be a max over every child so far).

Usage: .venv/bin/python bench/bench.py [--runs 3] [--only convert,inspect,help,verify]
(see --help; bench/README.md says what each row means).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from detect_bench import bench_detect, bench_images
from forwards import bench_forwards, fixture, flax_reference
from measure import (
    OUT,
    OWLVIT,
    PYTHON,
    ROOT,
    BenchError,
    Row,
    Series,
    failed_row,
    fmt_rss,
    markdown_table,
    prepare,
    remove,
    row_from_dict,
    run_measured,
    timed,
)
from photo import bench_photo

RESULTS = OUT / "results.md"
README = ROOT / "bench" / "README.md"  # the performance table lives here
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
BASELINE_SCRIPT = ROOT / "bench" / "baseline_convert.py"
SECTIONS = ("convert", "inspect", "help", "verify", "orbax", "forwards", "photo", "detect")

# Targets; convert's are for a first conversion, file in page cache.
CONVERT_TIME_RATIO = {"L/14": 1.3, "B/32": 1.5}
B32_SLACK_S = 0.3
CONVERT_RSS_RATIO = 0.5
INSPECT_SECONDS = 0.5
HELP_SECONDS = 0.3
VERIFY_RATIO = 1.3
# Targets for Orbax checkpoint directories.
ORBAX_INSPECT_SECONDS = 1.0
ORBAX_CONVERT_RATIO = 2.0
ORBAX_RSS_RATIO = 0.5


def environment(args: argparse.Namespace) -> str:
    """Where and how the numbers were taken; they only mean something next to this."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} · commit {commit or '?'}"
        f"{' (+ uncommitted changes)' if dirty else ''} · {os.cpu_count()} CPUs, "
        f"{memory:.0f} GiB RAM · Python {platform.python_version()} · load average at start "
        f"{load} · runs {args.runs} (fast commands {args.fast_runs})"
    )


# ---------------------------------------------------------------------------- fixtures


def build_fixture(variant: str, path: Path) -> None:
    """Build a random full-size checkpoint once (cached in bench/out), in a child process so
    that the ~6 GB the Flax serializer needs is not held by this process afterwards."""
    if path.exists():
        return
    print(f"building {variant} fixture at {path.relative_to(ROOT)} (once) …", flush=True)
    sample = run_measured([PYTHON, __file__, "_worker", "build", variant, path])
    print(f"  built in {sample.seconds:.1f} s, peak RSS {fmt_rss(sample.max_rss)}", flush=True)
    run_measured([OWLVIT, "inspect", path, "--json"])  # the project's reader accepts it


def worker_build(variant: str, path: str) -> None:
    """Released v1 files use the v1 layout (`optimizer/target`, `resblocks.N`, `ln_1/ln_2`)."""
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    spec = VARIANTS[variant]
    build_checkpoint(path, spec, layout="v1" if spec.version == 1 else "v2")


def build_orbax_fixture(variant: str, workdir: Path) -> Path:
    """A full-size Orbax checkpoint as flax's `save_checkpoint` writes it with its defaults
    (OCDBT, zstd), built once; returns its `checkpoint_N` directory."""
    checkpoint = workdir / "checkpoint_0"
    if not checkpoint.exists():
        print(f"building {variant} Orbax fixture at {workdir.relative_to(ROOT)} (once) …")
        sample = run_measured([PYTHON, __file__, "_worker", "build_orbax", variant, workdir])
        print(f"  built in {sample.seconds:.1f} s, peak RSS {fmt_rss(sample.max_rss)}", flush=True)
    return checkpoint


def worker_build_orbax(variant: str, workdir: str) -> None:
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    spec = VARIANTS[variant]
    layout = "v1" if spec.version == 1 else "v2"
    build_checkpoint(workdir, spec, layout, orbax={"writer": "flax", "step": 0})


def worker_tensorstore_read(checkpoint: str) -> None:
    """The floor under reading an Orbax checkpoint: every array of `_METADATA` opened and
    read with tensorstore alone (no owlvit), four at a time as convert's workers do."""
    from concurrent.futures import ThreadPoolExecutor

    import tensorstore as ts

    root = Path(checkpoint).resolve()
    tree = json.loads((root / "_METADATA").read_text())["tree_metadata"]
    names = [".".join(str(k["key"]) for k in leaf["key_metadata"]) for leaf in tree.values()]
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
    base = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{root}/"}}

    def read(name: str) -> int:
        spec = {"driver": "zarr", "kvstore": {**base, "path": f"{name}/"}}
        return ts.open(spec, open=True, context=context).result().read().result().nbytes

    with ThreadPoolExecutor(max_workers=4) as pool:
        total = sum(pool.map(read, names))
    print(json.dumps({"arrays": len(names), "bytes": total}))


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def converted(ckpt: Path, output: Path) -> Path:
    """A converted model directory for `ckpt`, made once (not measured)."""
    if not (output / "model.safetensors").exists():
        run_measured([OWLVIT, "convert", ckpt, output, "--overwrite"])
    return output


# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Timed:
    """One command of the convert section: what it runs, what it writes, and the checkpoint
    it reads in which page-cache state."""

    cmd: list[str | Path]
    output: Path
    ckpt: Path
    cache: str
    stdout: Path | None = None


def bench_convert(l14: Path, b32: Path, runs: int) -> list[Row]:
    """convert vs `cat CKPT > OUT` vs the naive Flax-restore + torch conversion, interleaved
    per run so that load from other processes hits all alike. Every convert is a first
    conversion on a fresh machine: owlvit's cache (remembered digests) is emptied before it."""
    out, copy, naive_dir = OUT / "convert-out", OUT / "cat-copy.bin", OUT / "naive-out"
    owlvit_cache = OUT / "owlvit-cache"
    os.environ["OWLVIT_CACHE"] = str(owlvit_cache)

    def convert(ckpt: Path, cache: str) -> Timed:
        return Timed([OWLVIT, "convert", ckpt, out, "--overwrite"], out, ckpt, cache)

    commands = {
        "cat L/14 warm": Timed(["cat", l14], copy, l14, "warm", copy),
        "convert L/14 warm": convert(l14, "warm"),
        "cat L/14 cold": Timed(["cat", l14], copy, l14, "cold", copy),
        "convert L/14 cold": convert(l14, "cold"),
        "naive": Timed(
            [PYTHON, BASELINE_SCRIPT, l14, naive_dir], naive_dir, l14, "cold", OUT / "naive.json"
        ),
        "cat B/32 warm": Timed(["cat", b32], copy, b32, "warm", copy),
        "convert B/32 warm": convert(b32, "warm"),
    }
    series = {name: Series() for name in commands}
    try:
        for run in range(runs):
            for name, timed in commands.items():
                remove(timed.output)
                remove(owlvit_cache)
                prepare(timed.ckpt, timed.cache)
                series[name].samples.append(run_measured(timed.cmd, stdout=timed.stdout))
                seconds = series[name].samples[-1].seconds
                print(f"  run {run + 1}/{runs} {name}: {seconds:.2f} s", flush=True)
        phases = json.loads((OUT / "naive.json").read_text())
    finally:
        for timed in commands.values():
            remove(timed.output)
        remove(owlvit_cache)
    return convert_rows(series, l14.stat().st_size, b32.stat().st_size, phases)


def convert_row(name: str, convert: Series, cat: Series, size: int, slack: float) -> Row:
    """A convert target: time ≤ ratio × cat (+ slack seconds), peak RSS ≤ a share of the file."""
    ratio = CONVERT_TIME_RATIO[name]
    rss_ratio = convert.max_rss / size
    limit = ratio * cat.median + slack
    ok = convert.median <= limit and rss_ratio <= CONVERT_RSS_RATIO
    stated = f"≤ {ratio}× cat{f' + {slack} s' if slack else ''} · RSS ≤ {CONVERT_RSS_RATIO}× file"
    note = f"RSS {rss_ratio:.2f}× file; CPU {convert.cpu:.2f} s, cat's {cat.cpu:.2f} s"
    return Row(f"convert {name} ({size / 1e9:.2f} GB, file in page cache)", convert.median,
               ("cat CKPT > OUT", cat.median), convert.max_rss, (stated, ok), note)  # fmt: skip


def convert_rows(
    series: dict[str, Series], l14_size: int, b32_size: int, phases: dict[str, float]
) -> list[Row]:
    naive = series["naive"]
    cold = series["convert L/14 cold"]
    cold_cat = ("cat CKPT > OUT (cold)", series["cat L/14 cold"].median)
    phase_note = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    return [
        convert_row("L/14", series["convert L/14 warm"], series["cat L/14 warm"], l14_size, 0),
        convert_row("B/32", series["convert B/32 warm"], series["cat B/32 warm"], b32_size,
                    B32_SLACK_S),
        Row(f"convert L/14 ({l14_size / 1e9:.2f} GB, cold file)", cold.median, cold_cat,
            cold.max_rss, note=f"RSS {cold.max_rss / l14_size:.2f}× file"),
        Row("naive convert L/14, cold file: flax restore + torch init + load_state_dict + "
            "save_pretrained", naive.median, cold_cat, naive.max_rss,
            note=f"RSS {naive.max_rss / l14_size:.2f}× file; phases of its last run, s: "
                 f"{phase_note}"),
        Row("convert vs naive convert (cold file)", cold.median, ("naive convert", naive.median),
            note=f"peak RSS {cold.max_rss / naive.max_rss:.2f}× naive's"),
        Row("cat L/14 > OUT, file in page cache", series["cat L/14 warm"].median,
            max_rss=series["cat L/14 warm"].max_rss),
        Row("cat B/32 > OUT, file in page cache", series["cat B/32 warm"].median,
            max_rss=series["cat B/32 warm"].max_rss),
    ]  # fmt: skip


def python_startup(runs: int) -> Series:
    """`python -c pass`: the floor under any Python CLI's start-up."""
    return Series([run_measured([PYTHON, "-c", "pass"]) for _ in range(runs)])


def startup_row(name: str, samples: Series, floor: Series, limit: float) -> Row:
    """A command with an absolute target, beside the interpreter's own start-up."""
    return Row(name, samples.median, ("python -c pass", floor.median), samples.max_rss,
               (f"≤ {limit} s", samples.median <= limit))  # fmt: skip


def bench_inspect(ckpt: Path, runs: int) -> list[Row]:
    """inspect reads headers only; cold, the page cache's read-ahead may still pull in much
    of the file, so both states are measured."""
    floor = python_startup(runs)
    rows = []
    for cache in ("cold", "warm"):
        samples = Series()
        for _ in range(runs):
            prepare(ckpt, cache)
            samples.samples.append(run_measured([OWLVIT, "inspect", ckpt, "--json"]))
        rows.append(startup_row(f"inspect L/14 --json ({cache} file)", samples, floor,
                                INSPECT_SECONDS))  # fmt: skip
    return rows


def bench_orbax(checkpoint: Path, runs: int, fast_runs: int, cache: str) -> list[Row]:
    """An Orbax L/14 directory: inspect (metadata only) and convert against tensorstore
    reading the same arrays, interleaved per run."""
    size = directory_size(checkpoint)
    floor = python_startup(fast_runs)
    inspect = Series()
    for _ in range(fast_runs):
        prepare(checkpoint, "cold")
        inspect.samples.append(run_measured([OWLVIT, "inspect", checkpoint, "--json"]))
    output = OUT / "orbax-convert-out"
    commands: dict[str, list[str | Path]] = {
        "read": [PYTHON, __file__, "_worker", "tensorstore_read", checkpoint],
        "convert": [OWLVIT, "convert", checkpoint, output, "--overwrite"],
    }
    series = {name: Series() for name in commands}
    os.environ["OWLVIT_CACHE"] = str(OUT / "owlvit-cache")
    run_measured(commands["convert"])  # fills the owlvit cache and the sha256 memo: not measured
    try:
        for _ in range(runs):
            for name, cmd in commands.items():
                remove(output)
                prepare(checkpoint, cache)
                series[name].samples.append(run_measured(cmd))
    finally:
        remove(output)
    read, convert = series["read"], series["convert"]
    rss_ratio = convert.max_rss / size
    ok = convert.median <= ORBAX_CONVERT_RATIO * read.median and rss_ratio <= ORBAX_RSS_RATIO
    read_baseline = ("tensorstore read of the same arrays", read.median)
    return [
        Row(f"inspect Orbax L/14 dir --json (cold, {size / 1e9:.2f} GB, metadata only)",
            inspect.median, ("python -c pass", floor.median), inspect.max_rss,
            (f"≤ {ORBAX_INSPECT_SECONDS} s", inspect.median <= ORBAX_INSPECT_SECONDS)),
        Row(f"convert Orbax L/14 dir (OCDBT, zstd; {cache} files)", convert.median,
            read_baseline, convert.max_rss,
            (f"≤ {ORBAX_CONVERT_RATIO}× · RSS ≤ {ORBAX_RSS_RATIO}× dir", ok),
            f"RSS {rss_ratio:.2f}× dir"),
        Row("tensorstore read of the same arrays (4 at a time)", read.median,
            max_rss=read.max_rss),
    ]  # fmt: skip


def bench_help(runs: int) -> list[Row]:
    floor = python_startup(runs)
    rows = []
    for argv in (["--help"], ["convert", "--help"]):
        samples = Series([run_measured([OWLVIT, *argv]) for _ in range(runs)])
        rows.append(startup_row(f"owlvit {' '.join(argv)}", samples, floor, HELP_SECONDS))
    rows.append(Row("python -c pass", floor.median, max_rss=floor.max_rss))
    return rows


def bench_verify(ckpt: Path, runs: int) -> list[Row]:
    """verify vs the two bare forward passes (after warm-up) in a separate process. Loading
    and jit compile are reported separately: they are not forward work."""
    hf_dir = converted(ckpt, OUT / "b32-hf")
    report_path, bare_path = OUT / "verify.json", OUT / "forwards.json"
    verify, bare = Series(), Series()
    reports: list[dict[str, Any]] = []
    forwards: list[dict[str, float]] = []
    for run in range(runs):
        prepare(ckpt, "warm")
        # exit 1 = a check failed: the timings still count (random weights, stock tolerances)
        verify.samples.append(
            run_measured(
                [OWLVIT, "verify", ckpt, hf_dir, "--json"], stdout=report_path, ok_codes=(0, 1)
            )
        )
        reports.append(json.loads(report_path.read_text()))
        bare.samples.append(
            run_measured([PYTHON, __file__, "_worker", "forwards", ckpt, hf_dir], stdout=bare_path)
        )
        forwards.append(json.loads(bare_path.read_text()))
        print(
            f"  run {run + 1}/{runs} verify {verify.samples[-1].seconds:.1f} s, bare worker "
            f"{bare.samples[-1].seconds:.1f} s",
            flush=True,
        )
    return verify_rows(verify, bare, reports, forwards)


def median_of(items: Sequence[dict[str, Any]], *keys: str) -> float:
    return statistics.median(sum(item.get(k, 0.0) for k in keys) for item in items)


def verify_rows(
    verify: Series, bare: Series, reports: list[dict[str, Any]], forwards: list[dict[str, float]]
) -> list[Row]:
    timings = [r["timings"] for r in reports]
    bare_sum = median_of(forwards, "flax_forward", "hf_forward")
    wall = verify.median
    load = median_of(timings, "load_flax", "load_hf")
    compile_s = median_of(timings, "flax_compile")
    total = statistics.median(
        s.seconds - t.get("load_flax", 0) - t.get("load_hf", 0) - t.get("flax_compile", 0)
        for s, t in zip(verify.samples, timings, strict=True)
    )
    other = statistics.median(
        s.seconds - sum(t.values()) for s, t in zip(verify.samples, timings, strict=True)
    )
    passed = "passed" if all(r.get("passed") for r in reports) else "checks failed"
    bare_both = ("bare Flax + HF forward", bare_sum)
    return [
        Row("verify B/32 768 px, total minus load and compile", total, bare_both,
            verify.max_rss, (f"≤ {VERIFY_RATIO}×", total <= VERIFY_RATIO * bare_sum),
            f"verify {passed}"),
        Row("verify: forwards (flax_forward + hf_forward)",
            median_of(timings, "flax_forward", "hf_forward"), bare_both),
        Row("verify: processor check", median_of(timings, "processor"),
            ("bare HF forward", median_of(forwards, "hf_forward"))),
        Row("verify: loading (load_flax + load_hf)", load,
            ("bare process's loading", median_of(forwards, "load_flax", "load_hf"))),
        Row("verify: Flax jit compile", compile_s,
            ("bare process's first call", median_of(forwards, "flax_warmup"))),
        Row("verify: rest (start-up, imports outside timers, inputs, checks)", other),
        Row("verify: wall, whole process", wall, ("bare-forwards process", bare.median),
            verify.max_rss),
        Row("bare Flax forward", median_of(forwards, "flax_forward"), max_rss=bare.max_rss),
        Row("bare HF forward", median_of(forwards, "hf_forward")),
    ]  # fmt: skip


def worker_forwards(ckpt: str, hf_dir: str, repeats: int = 3) -> None:
    """Bare forward passes on verify's own inputs, each side after a warm-up call; prints
    one JSON object of seconds (medians over `repeats`)."""
    from owlvit_cli.runtime.hf_model import load_hf_model, run_hf_detection

    result: dict[str, float] = {}
    runner, inputs, result["load_flax"] = flax_reference(ckpt)
    pixels, ids = inputs.scenic_pixels, inputs.input_ids
    result["flax_warmup"] = timed(lambda: runner.detect(pixels, ids))
    result["flax_forward"] = timed(lambda: runner.detect(pixels, ids), repeats)
    started = time.perf_counter()
    model = load_hf_model(Path(hf_dir))
    result["load_hf"] = time.perf_counter() - started
    hf_args = (model, inputs.pixel_values, ids)
    result["hf_warmup"] = timed(lambda: run_hf_detection(*hf_args))
    result["hf_forward"] = timed(lambda: run_hf_detection(*hf_args), repeats)
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


WORKERS: dict[str, Callable[..., None]] = {
    "build": worker_build,
    "forwards": worker_forwards,
    "build_orbax": worker_build_orbax,
    "tensorstore_read": worker_tensorstore_read,
}


# ---------------------------------------------------------------------------- driver


def update_readme(readme: Path, table: str) -> None:
    """Replace what lies between the bench markers; refuse to guess where they should go."""
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        raise BenchError(f"{readme} lacks the markers {MARK_START} … {MARK_END}")
    head = text[: start + len(MARK_START)]
    readme.write_text(f"{head}\n{table}\n{text[end:]}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of convert and verify")
    parser.add_argument(
        "--fast-runs", type=int, default=5, help="runs of inspect and --help (cheap, noisier)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help=f"put the table between {MARK_START} and {MARK_END} in bench/README.md",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="delete the cached fixtures at the end (keeps results.md)",
    )
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown or args.runs < 1 or args.fast_runs < 1:
        parser.error(f"unknown sections {sorted(unknown)}" if unknown else "runs must be ≥ 1")
    return args


def check_disk(ckpt_bytes: int) -> None:
    """convert, cat and the naive baseline each write a copy; refuse before filling the disk."""
    free = shutil.disk_usage(OUT).free
    if free < 4 * ckpt_bytes:
        raise BenchError(
            f"need ~{4 * ckpt_bytes / 1e9:.0f} GB free in {OUT}, have {free / 1e9:.1f} GB"
        )


def run_sections(args: argparse.Namespace, log: TextIO) -> list[Row]:
    """Each section fails on its own: one broken command must not hide the other numbers."""
    l14, b32 = OUT / "v1-l14.msgpack", OUT / "v1-b32.msgpack"
    sections: dict[str, Callable[[], list[Row]]] = {
        "convert": lambda: bench_convert(l14, b32, args.runs),
        "inspect": lambda: bench_inspect(l14, args.fast_runs),
        "help": lambda: bench_help(args.fast_runs),
        "verify": lambda: bench_verify(b32, args.runs),
        "forwards": lambda: bench_forwards(args.runs),
        "photo": lambda: [row_from_dict(item) for item in bench_photo(max(args.runs, 3))],
        "detect": lambda: [
            row_from_dict(item)
            for image in bench_images()
            for item in bench_detect(fixture("v2-b16")[1], image, args.runs)
        ],
        "orbax": lambda: bench_orbax(
            build_orbax_fixture("v1-l14", OUT / "v1-l14-orbax"),
            args.runs,
            args.fast_runs,
            "cold",  # read cold, as on a first conversion
        ),
    }
    rows: list[Row] = []
    for name in args.sections:
        print(f"[{name}]", file=log, flush=True)
        started = time.perf_counter()
        try:
            if name in ("convert", "inspect"):
                build_fixture("v1-l14", l14)
                check_disk(l14.stat().st_size)
            if name in ("convert", "verify"):
                build_fixture("v1-b32", b32)
            rows += sections[name]()
        except BenchError as exc:
            print(f"  {name} failed: {exc}", file=log, flush=True)
            rows.append(failed_row(name, exc))
        print(f"  ({time.perf_counter() - started:.0f} s)", file=log, flush=True)
    return rows


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_worker"]:
        WORKERS[argv[1]](*argv[2:])
        return 0
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    header = environment(args)
    rows = run_sections(args, sys.stdout)
    table = markdown_table(rows)
    RESULTS.write_text(f"{header}\n\n{table}\n")
    print(f"\n{header}\n\n{table}\n\nwritten to {RESULTS.relative_to(ROOT)}")
    code = 0 if all(r.seconds is not None for r in rows) else 1  # a missed target is not an error
    if args.update_readme:
        try:
            update_readme(README, f"{header}\n\n{table}")
            print(f"updated {README.relative_to(ROOT)}")
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
    if args.clean:
        for path in OUT.iterdir():
            if path != RESULTS:
                remove(path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
