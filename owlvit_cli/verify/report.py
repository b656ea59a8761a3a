"""What a verification leaves behind: the report (what --json prints and --record keeps), the
arrays --save-outputs writes, the picture --save-viz draws."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from owlvit_cli.errors import BadInputError
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.verify.compare import Comparison
from owlvit_cli.verify.inputs import VerifyInputs, VerifyOptions
from owlvit_cli.version import __version__

if TYPE_CHECKING:
    from owlvit_cli.model.pinned_dir import PinnedDir


@dataclass
class Verification:
    report: dict[str, Any]
    arrays: dict[str, np.ndarray]
    inputs: VerifyInputs | None  # None when the pairing check failed and nothing ran
    top_detections: dict[str, list[dict]]
    # The loaded models, for a caller that runs more on them. Held here rather than freed
    # when verification returns: freeing a compiled XLA program and two sets of weights
    # takes 0.1-0.25 s, which a process about to exit (the CLI) need not spend.
    models: dict[str, Any] = field(default_factory=dict, repr=False)
    recorded: Path | None = None  # where the report was kept (HF_DIR/owlvit_verification.json)
    record_skipped: str | None = None  # why a report kept by default was not

    def picture(self) -> Any:
        """The first image with the Flax and the stock transformers top detections side by
        side (boxes in the image's own pixels), for a reviewer to see agreement at a glance."""
        from owlvit_cli.runtime.draw import draw_side_by_side

        assert self.inputs is not None, "no picture: the models did not run"
        raw = self.inputs.raw_images[0]
        image = raw if raw is not None else (self.inputs.scenic_pixels[0] * 255).round()
        image = np.asarray(image, np.uint8)
        left, right = (
            detections_in_pixels(self.top_detections[side][0], self.inputs.queries, image.shape)
            for side in ("flax", "stock")
        )
        return draw_side_by_side(image, left, right, "Flax (scenic-exact)", "transformers (stock)")


def detections_in_pixels(top: dict, queries: list[str], shape: tuple[int, ...]) -> list[dict]:
    """Boxes are relative to the bottom/right-padded square: scale by the longer side."""
    height, width = shape[:2]
    side = max(height, width)
    found = []
    for query, score, (cx, cy, w, h) in zip(
        top["queries"], top["scores"], top["boxes"], strict=True
    ):
        box = [(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side]
        box = [
            min(max(v, 0.0), lim)
            for v, lim in zip(box, (width, height, width, height), strict=True)
        ]
        found.append(
            {"box": box, "label": queries[query], "score": float(1 / (1 + np.exp(-score)))}
        )
    return found


SAVED_OUTPUTS = ("pred_logits", "pred_boxes", "objectness_logits", "class_embeddings")


def saved_arrays(inputs: VerifyInputs, flax: dict, hf: dict) -> dict[str, np.ndarray]:
    """What --save-outputs writes: the inputs and both sides' (stock) outputs."""
    arrays = {"pixel_values": inputs.pixel_values, "input_ids": inputs.input_ids}
    for name in SAVED_OUTPUTS:
        if name in flax:
            arrays[f"flax_{name}"] = flax[name]
            arrays[f"hf_{name}"] = hf[name]
    return arrays


def build_report(
    checkpoint: Path,
    hf_dir: Path,
    spec: ModelSpec,
    inputs: VerifyInputs,
    rows: list[Comparison],
    timings: dict[str, float],
    flax_top: list[dict],
    processor_info: dict[str, Any],
    options: VerifyOptions,
) -> dict[str, Any]:
    levels = {}
    for level in ("mapping", "stock", "precision", "processor"):
        members = [r for r in rows if r.level == level]
        if members:
            levels[level] = {"passed": all(r.passed for r in members)}
    return {
        "passed": all(r.passed for r in rows),
        # Names, not paths: the report is published with the model (push) and local
        # paths are nobody else's business.
        "checkpoint": Path(checkpoint).name,
        "hf_dir": Path(hf_dir).name,
        "version": spec.version,
        "images": [Path(image).name for image in inputs.images],
        "queries": inputs.queries,
        "preprocessing": inputs.preprocessing,
        "strict_processor": options.strict_processor,
        "processor_detections": options.processor_forward,
        "levels": levels,
        "outputs": [asdict(r) for r in rows],
        "failed": [f"{r.level}/{r.name}" for r in rows if not r.passed],
        "top_detections": {"flax": flax_top, "hf_processor": processor_info.get("top_detections")},
        "processor": {k: v for k, v in processor_info.items() if k != "top_detections"},
        "timings": timings,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def source_failure_report(
    checkpoint: Path, hf_dir: Path, pairing: Any, timings: dict[str, float]
) -> dict[str, Any]:
    """The report when CKPT is not HF_DIR's source: no level ran, so none is reported."""
    return {
        "passed": False,
        "checkpoint": Path(checkpoint).name,
        "hf_dir": Path(hf_dir).name,
        **pairing.report_fields(),
        "levels": {},
        "outputs": [],
        "failed": ["source"],
        "timings": timings,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failure_summary(report: dict[str, Any]) -> str:
    if "source" in report["failed"]:
        return "verification failed: " + report["source"]["message"]
    bad = [r for r in report["outputs"] if not r["passed"]]
    parts = [
        f"{r['level']}/{r['name']} max |diff| {r['max_abs']:.3g} > {r['tolerance']:.3g}"
        for r in bad[:6]
    ]
    return "verification failed: " + "; ".join(parts)


def write_outputs(
    result: Verification,
    hf_dir: PinnedDir,
    record: bool,
    save_outputs: Path | None,
    save_viz: Path | None,
) -> None:
    """Keep what the caller asked for: the arrays, a picture, the report inside HF_DIR (which
    `push` turns into the model card), written into the directory that was verified. Each
    file appears whole or not at all."""
    import io

    from owlvit_cli.atomic import atomic_write_bytes
    from owlvit_cli.json_text import strict_json_dumps
    from owlvit_cli.model.model_dir import RECORD_FILE, VERIFICATION_FILE
    from owlvit_cli.model.written_files import RECORD_DIGEST_KEY, record_digest

    if result.inputs is None:  # CKPT is not HF_DIR's source: nothing ran, nothing to keep
        return
    if save_outputs is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **result.arrays)
        atomic_write_bytes(save_outputs, buffer.getvalue())
    if save_viz is not None:
        from owlvit_cli.runtime.draw import save_image

        save_image(result.picture(), save_viz)
    if record:
        conversion = hf_dir.read_bytes(RECORD_FILE)  # pinned: the one verified
        report = result.report
        if conversion is not None:  # what tells this report from a user's file of its name
            report = {**report, RECORD_DIGEST_KEY: record_digest(conversion)}
        text = strict_json_dumps(report, indent=2, default=str) + "\n"
        hf_dir.write(VERIFICATION_FILE, text.encode())


def check_output_paths(
    save_outputs: Path | None,
    save_viz: Path | None,
    inputs: Sequence[Path] = (),
    checkpoint: Sequence[Path] = (),
) -> None:
    """Refuse unusable or unwritable outputs before the slow part, not after it. A file may
    not replace an input, nor lie inside the `checkpoint` (an Orbax directory or the workdir
    it came from), whose every file is part of its identity."""
    from owlvit_cli.atomic import check_not_input, check_writable_file
    from owlvit_cli.checkpoint.workdir import check_not_a_step

    if save_outputs is not None and save_outputs.suffix != ".npz":
        raise BadInputError(f"the outputs file must be a .npz file, got {save_outputs}")
    if save_viz is not None:
        from owlvit_cli.runtime.draw import output_format

        output_format(save_viz)
    for path in (save_outputs, save_viz):
        if path is not None:
            for source in inputs:
                check_not_input(path, source, directory=False)
            for source in checkpoint:
                check_not_input(path, source)
            check_not_a_step(path)
            check_writable_file(path)
