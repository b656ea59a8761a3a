"""verify at the speed of its forward passes: full-size v2 B/16 at 960 px and v2
L/14 at 1008 px, random weights in scenic's format.

Per model, one run measures, each as its own child process:
- `owlvit verify CKPT HF_DIR --json --no-record` with an empty owlvit cache (a first run:
  XLA compiles) and again with that cache (the compiled programs are loaded), float32; for
  B/16 also a bfloat16 directory;
- a bare process (`forwards.py _worker bare`): jax imported, the params read and the Flax
  model compiled with no compilation cache, then the Flax forward verify runs (text queries
  plus the image-only class embeddings) and a plain transformers forward on the same pixels
  and token ids, each timed after a warm-up call;
- a bare transformers load: a fresh `python -c` importing transformers and calling
  `Owlv2ForObjectDetection.from_pretrained(HF_DIR)`, timed whole, as a user would pay it;
- the floors under the Flax forward: a bare matmul of the MLP's shape, and one layer's
  attention, in XLA (as the model computes it) and in torch (as transformers does).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import OUT, OWLVIT, PYTHON, Row, Sample, run_measured, timed

FORWARD_RATIO = 1.15  # Flax forward vs transformers forward
LOAD_RATIO = 1.2  # verify's transformers load vs a bare from_pretrained
WALL_RATIO = 1.15  # verify's wall vs bare forwards + bare loads
RSS_LIMIT = 5 * 10**9  # verify's peak RSS at L/14
MODELS = {"B/16": ("v2-b16", 960), "L/14": ("v2-l14", 1008)}
HF_LOAD = (
    "import sys; from transformers import Owlv2ForObjectDetection; "
    "Owlv2ForObjectDetection.from_pretrained(sys.argv[1])"
)


def fixture(variant: str) -> tuple[Path, Path]:
    """The random checkpoint (current scenic layout) and its float32 conversion, built once."""
    ckpt, hf_dir = OUT / f"{variant}.msgpack", OUT / f"{variant}-hf"
    if not ckpt.exists():
        print(f"building {variant} fixture (once) …", flush=True)
        run_measured([PYTHON, __file__, "_worker", "build", variant, ckpt])
    if not hf_dir.exists():
        run_measured([OWLVIT, "convert", ckpt, hf_dir])
    return ckpt, hf_dir


def bf16_dir(ckpt: Path, variant: str) -> Path:
    hf_dir = OUT / f"{variant}-hf-bf16"
    if not hf_dir.exists():
        run_measured([OWLVIT, "convert", ckpt, hf_dir, "--dtype", "bfloat16"])
    return hf_dir


def verify_run(ckpt: Path, hf_dir: Path, cache: Path) -> tuple[Sample, dict[str, Any]]:
    report = OUT / "forwards-verify.json"
    env = {**os.environ, "OWLVIT_CACHE": str(cache)}
    sample = run_measured(
        [OWLVIT, "verify", ckpt, hf_dir, "--json", "--no-record"], report, (0, 1), env=env
    )
    return sample, json.loads(report.read_text())


def bare_run(ckpt: Path, hf_dir: Path) -> dict[str, float]:
    out = OUT / "forwards-bare.json"
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    run_measured([PYTHON, __file__, "_worker", "bare", ckpt, hf_dir], out, env=env)
    return json.loads(out.read_text())


def floors_run(variant: str, size: int) -> dict[str, float]:
    out = OUT / "forwards-floors.json"
    run_measured([PYTHON, __file__, "_worker", "floors", variant, str(size)], out)
    return json.loads(out.read_text())


def bench_forwards(runs: int) -> list[Row]:
    rows: list[Row] = []
    for name, (variant, size) in MODELS.items():
        ckpt, hf_dir = fixture(variant)
        rows += model_rows(name, variant, size, ckpt, hf_dir, runs)
    return rows


def model_rows(
    name: str, variant: str, size: int, ckpt: Path, hf_dir: Path, runs: int
) -> list[Row]:
    first, warm, bare, loads = [], [], [], []
    for run in range(runs):
        with tempfile.TemporaryDirectory(dir=OUT) as cache:
            first.append(verify_run(ckpt, hf_dir, Path(cache)))
            warm.append(verify_run(ckpt, hf_dir, Path(cache)))
        bare.append(bare_run(ckpt, hf_dir))
        loads.append(run_measured([PYTHON, "-c", HF_LOAD, hf_dir]))
        print(f"  {name} run {run + 1}/{runs}: verify {first[-1][0].seconds:.1f} s", flush=True)
    floors = floors_run(variant, size)
    label = f"{name} {size} px"
    rows = forward_rows(label, bare, floors)
    rows += verify_rows(label, first, warm, bare, median_sample(loads))
    if name == "B/16":
        rows += bf16_rows(label, ckpt, bf16_dir(ckpt, variant), bare, loads)
    return rows


def med(items: list[dict[str, float]], *keys: str) -> float:
    return statistics.median(sum(item[k] for k in keys) for item in items)


def forward_rows(label: str, bare: list[dict[str, float]], floors: dict[str, float]) -> list[Row]:
    flax, hf = med(bare, "flax_forward"), med(bare, "hf_forward")
    return [
        Row(f"{label}: Flax forward (verify's program)", flax,
            ("transformers forward, same pixels and ids", hf), None,
            (f"≤ {FORWARD_RATIO}×", flax <= FORWARD_RATIO * hf)),
        Row(f"{label} floor: matmul {floors['shape']} in XLA", floors["xla_matmul"],
            ("the same in torch", floors["torch_matmul"])),
        Row(f"{label} floor: one layer's attention in XLA (as the model computes it)",
            floors["xla_attention"], ("torch scaled_dot_product_attention",
                                      floors["torch_attention"])),
        Row(f"{label} floor: one encoder layer in XLA (as the model computes it)",
            floors["xla_layer"], ("transformers' CLIP encoder layer", floors["torch_layer"])),
    ]  # fmt: skip


def verify_rows(
    label: str,
    first: list[tuple[Sample, dict[str, Any]]],
    warm: list[tuple[Sample, dict[str, Any]]],
    bare: list[dict[str, float]],
    hf_load: Sample,
) -> list[Row]:
    wall = statistics.median(s.seconds for s, _ in first)
    warm_wall = statistics.median(s.seconds for s, _ in warm)
    rss = max(s.max_rss for s, _ in first + warm)
    budget = med(bare, "flax_forward", "hf_forward", "flax_load", "flax_compile") + hf_load.seconds
    timings = [report["timings"] for _, report in first]
    thread_cpu = statistics.median(t.get("load_hf_cpu", t["load_hf"]) for t in timings)
    waited = statistics.median(t["load_hf"] for t in timings)
    rss_target = (f"≤ {RSS_LIMIT / 1e9:.0f} GB", rss <= RSS_LIMIT) if "L/14" in label else None
    return [
        Row(f"{label}: verify, first run (XLA compiles)", wall,
            ("bare forwards + bare loads", budget), rss,
            (f"≤ {WALL_RATIO}×", wall <= WALL_RATIO * budget), passed(first)),
        Row(f"{label}: verify, second run (compiled programs from the cache)", warm_wall,
            ("bare forwards + bare loads", budget), None,
            (f"≤ {WALL_RATIO}×", warm_wall <= WALL_RATIO * budget)),
        Row(f"{label}: verify's peak RSS (beside it, the first run's wall)", wall, None, rss,
            rss_target),
        Row(f"{label}: verify's transformers load, CPU time of its thread", thread_cpu,
            ("fresh process: import + from_pretrained, CPU time", hf_load.cpu), None,
            (f"≤ {LOAD_RATIO}×", thread_cpu <= LOAD_RATIO * hf_load.cpu),
            f"waited for after the Flax side: {waited:.2f} s; bare wall {hf_load.seconds:.2f} s"),
        Row(f"{label}: verify's Flax compile, first run / second run",
            statistics.median(t["flax_compile"] for t in timings),
            ("second run", statistics.median(r["timings"]["flax_compile"] for _, r in warm))),
    ]  # fmt: skip


def bf16_rows(
    label: str, ckpt: Path, hf_dir: Path, bare: list[dict[str, float]], loads: list[Sample]
) -> list[Row]:
    with tempfile.TemporaryDirectory(dir=OUT) as cache:
        sample, report = verify_run(ckpt, hf_dir, Path(cache))
    bf16 = bare_run(ckpt, hf_dir)
    # What a bfloat16 directory asks: the Flax model twice (float32, then rounded), the
    # transformers model in float32 (mapping) and as stored (stock), and the loads.
    budget = (
        2 * med(bare, "flax_forward") + med(bare, "hf_forward") + bf16["hf_forward"]
        + med(bare, "flax_load", "flax_compile") + median_sample(loads).seconds
    )  # fmt: skip
    return [
        Row(f"{label} bfloat16 directory: verify, first run", sample.seconds,
            ("bare forwards + bare loads", budget), sample.max_rss,
            (f"≤ {WALL_RATIO}×", sample.seconds <= WALL_RATIO * budget),
            passed([(sample, report)])),
    ]  # fmt: skip


def median_sample(samples: list[Sample]) -> Sample:
    """The median wall time and CPU time of a command's runs (and the largest peak RSS)."""
    return Sample(
        statistics.median(s.seconds for s in samples),
        max(s.max_rss for s in samples),
        statistics.median(s.cpu for s in samples),
    )


def passed(runs: list[tuple[Sample, dict[str, Any]]]) -> str:
    return "verify passed" if all(r.get("passed") for _, r in runs) else "checks failed"


# ---------------------------------------------------------------------------- workers


def worker_build(variant: str, path: str) -> None:
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    build_checkpoint(path, VARIANTS[variant])


def flax_reference(ckpt: str) -> tuple[Any, Any, float]:
    """The Flax model on the checkpoint's float32 params, verify's own inputs (default image
    and queries), and the seconds the model took to load (jax's import included)."""
    started = time.perf_counter()
    import numpy as np

    from owlvit_cli.checkpoint.inspection import checkpoint_spec
    from owlvit_cli.checkpoint.reader import open_checkpoint
    from owlvit_cli.scenic.flax_model import FlaxRunner
    from owlvit_cli.verify.inputs import VerifyOptions, prepare_inputs

    with open_checkpoint(ckpt) as reader:
        spec = checkpoint_spec(reader)
        runner = FlaxRunner(spec, reader.params_tree(np.float32))
    seconds = time.perf_counter() - started
    return runner, prepare_inputs(spec, VerifyOptions()), seconds


def worker_bare(ckpt: str, hf_dir: str) -> None:
    """Both models as a script of one's own would run them; one JSON object of seconds."""
    result: dict[str, float] = {}
    runner, inputs, result["flax_load"] = flax_reference(ckpt)
    pixels, ids = inputs.scenic_pixels, inputs.input_ids
    result["flax_compile"] = timed(lambda: runner.compile(pixels, ids))
    timed(lambda: runner.detect(pixels, ids, image_only=True))  # warm-up
    result["flax_forward"] = timed(lambda: runner.detect(pixels, ids, image_only=True), 2)
    runner.release_params()
    result["hf_forward"] = hf_forward(hf_dir, inputs.pixel_values, ids)
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


def hf_forward(hf_dir: str, pixel_values: Any, input_ids: Any) -> float:
    import torch
    from transformers import AutoModelForZeroShotObjectDetection

    model = AutoModelForZeroShotObjectDetection.from_pretrained(hf_dir).eval()
    batch, queries, length = input_ids.shape
    ids = torch.as_tensor(input_ids.reshape(batch * queries, length), dtype=torch.long)
    pixels = torch.as_tensor(pixel_values).to(model.dtype)

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=ids, pixel_values=pixels, attention_mask=(ids > 0).long())

    timed(forward)  # warm-up
    return timed(forward, 2)


def worker_floors(variant: str, size: str) -> None:
    """XLA against torch on the model's own shapes: the MLP's matmul, one layer's attention
    and one whole encoder layer, each after a warm-up; one JSON object of seconds."""
    from owlvit_cli.model.spec import VARIANTS

    vision = VARIANTS[variant].vision
    tokens = (int(size) // vision.patch_size) ** 2 + 1
    width, heads = vision.hidden_size, vision.num_attention_heads
    result: dict[str, Any] = {"shape": f"[{tokens}×{width}]·[{width}×{4 * width}]"}
    result.update(xla_floors(tokens, width, heads))
    result.update(torch_floors(tokens, width, heads))
    print(json.dumps(result))


def xla_floors(tokens: int, width: int, heads: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from owlvit_cli.scenic.attention import blockwise_attention
    from owlvit_cli.scenic.flax_model import ResidualBlock

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((tokens, width), np.float32))
    w = jnp.asarray(rng.standard_normal((width, 4 * width), np.float32))
    qkv = [jnp.asarray(rng.standard_normal((1, tokens, heads, width // heads), np.float32))] * 3
    block = ResidualBlock(heads, 4 * width)
    x = a[None]
    params = block.init(jax.random.PRNGKey(0), x)
    with jax.default_matmul_precision("highest"):
        matmul = jax.jit(jnp.dot).lower(a, w).compile()
        attention = jax.jit(blockwise_attention).lower(*qkv).compile()
        layer = jax.jit(block.apply).lower(params, x).compile()
    out = {}
    for key, fn in (
        ("xla_matmul", lambda: matmul(a, w).block_until_ready()),
        ("xla_attention", lambda: attention(*qkv).block_until_ready()),
        ("xla_layer", lambda: layer(params, x).block_until_ready()),
    ):
        timed(fn)
        out[key] = timed(fn, 3)
    return out


def torch_floors(tokens: int, width: int, heads: int) -> dict[str, float]:
    import torch
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    a, w = torch.randn(tokens, width), torch.randn(width, 4 * width)
    q = torch.randn(1, heads, tokens, width // heads)
    config = CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, num_attention_heads=heads
    )
    config._attn_implementation = "sdpa"
    layer = CLIPEncoderLayer(config).eval()
    x = a[None]
    out = {}
    with torch.inference_mode():
        for key, fn in (
            ("torch_matmul", lambda: a @ w),
            ("torch_attention", lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)),
            ("torch_layer", lambda: layer(x, None)),
        ):
            timed(fn)
            out[key] = timed(fn, 3)
    return out


WORKERS: dict[str, Callable[..., None]] = {
    "build": worker_build,
    "bare": worker_bare,
    "floors": worker_floors,
}

if __name__ == "__main__":
    if sys.argv[1:2] == ["_worker"]:
        WORKERS[sys.argv[2]](*sys.argv[3:])
