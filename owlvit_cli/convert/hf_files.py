"""The non-weight files of a converted model: config, processor, tokenizer.

They depend only on the model's spec, the weights dtype and the library versions, never on
the weights, yet making them means importing torch and transformers (seconds) for a few
kilobytes of JSON. So they are made once per combination, together with the tensor shapes
transformers expects (from a model built on the meta device), and kept in a small cache
(`$OWLVIT_CACHE`, else `$XDG_CACHE_HOME/owlvit`, else `~/.cache/owlvit`). A conversion
that finds its entry there never imports transformers. An unusable cache is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from owlvit_cli import __version__
from owlvit_cli.checkpoint.cache import cache_root
from owlvit_cli.model.model_dir import FLAVORS
from owlvit_cli.model.spec import ModelSpec

SHAPES_FILE = "target_shapes.json"
KEY_LIBRARIES = ("transformers", "tokenizers", "torch", "clip-anytorch")


def model_classes(spec: ModelSpec) -> tuple[Any, Any, Any]:
    """(config class, detection model class, processor class) for the checkpoint's version."""
    import transformers as tf

    flavor = FLAVORS[spec.version]
    names = (flavor.config_class, flavor.model_class, flavor.processor_class)
    return tuple(getattr(tf, name) for name in names)  # type: ignore[return-value]


def hf_config(spec: ModelSpec, dtype: str = "float32") -> Any:
    """The transformers config, every number from the derived spec (never from a hub config)."""
    config_cls, model_cls, _ = model_classes(spec)
    v, t = spec.vision, spec.text
    config = config_cls(
        text_config={
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "pad_token_id": 0,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        projection_dim=spec.projection_dim,
    )
    config.architectures = [model_cls.__name__]
    config.dtype = dtype
    return config


def model_tensor_shapes(spec: ModelSpec, config: Any) -> dict[str, tuple[int, ...]]:
    """The persistent tensors transformers expects, from a model built on the meta device
    (no memory, no random init)."""
    import torch

    _, model_cls, _ = model_classes(spec)
    with torch.device("meta"):
        model = model_cls(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def save_processor(directory: Path, spec: ModelSpec) -> None:
    """Tokenizer + image processor. Owlv2's processor pads bottom/right to a square and then
    resizes with anti-aliasing, as scenic does; the stock v1 processor stretches instead, so
    v1 models get it too (it pads with 0.0 where scenic pads with 0.5: README)."""
    from transformers import Owlv2ImageProcessor

    from owlvit_cli.convert.tokenizer_files import build_hf_tokenizer

    _, _, processor_cls = model_classes(spec)
    size = spec.vision.image_size
    image_processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    tokenizer = build_hf_tokenizer(directory)
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(str(directory))
    # transformers 4.x reads the image processor from preprocessor_config.json.
    legacy = {**image_processor.to_dict(), "processor_class": processor_cls.__name__}
    (directory / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2) + "\n")


def build_model_files(directory: Path, spec: ModelSpec, dtype: str) -> None:
    """Write config, processor and tokenizer files plus the expected tensor shapes."""
    config = hf_config(spec, dtype)
    shapes = model_tensor_shapes(spec, config)
    config.save_pretrained(str(directory))
    save_processor(directory, spec)
    files = sorted(p.name for p in directory.iterdir())
    record = {"files": files, "shapes": {name: list(shape) for name, shape in shapes.items()}}
    (directory / SHAPES_FILE).write_text(json.dumps(record) + "\n")


def cache_key(spec: ModelSpec, dtype: str) -> str:
    versions = {}
    for name in KEY_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    text = json.dumps([__version__, versions, spec.to_json(), dtype], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_entry(directory: Path) -> dict[str, Any] | None:
    """The entry's shapes record, or None when it is missing, partial or unreadable."""
    try:
        record = json.loads((directory / SHAPES_FILE).read_text())
        if all((directory / name).is_file() for name in record["files"]):
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


class ModelFiles:
    """The files for one (spec, dtype): at once from the cache, or made meanwhile.

    On a cache miss a child process imports transformers and writes the files while this
    process streams the weights, so the first conversion of a model shape costs about
    max(import, stream) instead of their sum.
    """

    def __init__(self, spec: ModelSpec, dtype: str) -> None:
        self.entry = cache_root() / "metadata" / cache_key(spec, dtype)
        self.record = read_entry(self.entry)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._child: subprocess.Popen[bytes] | None = None
        if self.record is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="owlvit-files-")
            command = [sys.executable, "-m", "owlvit_cli.convert.hf_files", self._scratch.name,
                       json.dumps(spec.to_json()), dtype]  # fmt: skip
            self._child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip

    @property
    def ready_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The expected shapes if known without waiting (a cache hit)."""
        return None if self.record is None else _shapes(self.record)

    def result(self) -> tuple[Path, dict[str, tuple[int, ...]]]:
        """(directory holding the files, expected tensor shapes), waiting for the child."""
        if self.record is not None and self._child is None:
            return self.entry, _shapes(self.record)
        assert self._child is not None and self._scratch is not None
        _, err = self._child.communicate()
        staging = Path(self._scratch.name)
        record = read_entry(staging)
        if self._child.returncode != 0 or record is None:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"making the config/processor files failed: {last[0]}")
        _store(staging, self.entry)
        self.record = record
        return staging, _shapes(record)

    def close(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        if self._scratch is not None:
            self._scratch.cleanup()


@contextlib.contextmanager
def model_files(spec: ModelSpec, dtype: str) -> Iterator[ModelFiles]:
    files = ModelFiles(spec, dtype)
    try:
        yield files
    finally:
        files.close()


def _shapes(record: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, shape in record.get("shapes", {}).items()}


def _store(staging: Path, entry: Path) -> None:
    """Best effort: a read-only or full cache only costs the next conversion some seconds."""
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            shutil.copytree(staging, tmp, dirs_exist_ok=True)
            if entry.exists():  # a damaged entry (read_entry refused it): replace it
                shutil.rmtree(entry)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def copy_model_files(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if path.name != SHAPES_FILE:
            shutil.copyfile(path, target / path.name)


def main(argv: list[str]) -> int:
    """`python -m owlvit_cli.convert.hf_files DIR SPEC_JSON DTYPE`: the child ModelFiles starts."""
    directory, spec_json, dtype = argv
    build_model_files(Path(directory), ModelSpec.from_json(json.loads(spec_json)), dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
