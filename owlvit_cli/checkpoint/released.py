"""The released OWL-ViT checkpoints, and what to say to a user who names one (or a URL) as if
it were a local file.

owlvit reads local files only: a checkpoint is large, and downloading it is the user's
decision. A name from the table below, or a URL, that is not a local file gets the exact
command that downloads it, instead of "no such file".
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from owlvit_cli.errors import CheckpointError

BUCKET_URL = "https://storage.googleapis.com/scenic-bucket/owl_vit/checkpoints/"
BUCKET_GS = "gs://scenic-bucket/owl_vit/checkpoints/"


@dataclass(frozen=True)
class ReleasedModel:
    """One row of the released checkpoints: a model and the files it was released as."""

    model: str
    names: tuple[str, ...]
    size_mib: int


# Named as in scenic's OWL-ViT README; the files lie at BUCKET_URL + name.
RELEASED: tuple[ReleasedModel, ...] = (
    ReleasedModel("OWL-ViT v1 B/32", ("clip_vit_b32_b0203fc",), 583),
    ReleasedModel("OWL-ViT v1 B/16", ("clip_vit_b16_6171dab",), 581),
    ReleasedModel("OWL-ViT v1 L/14", ("clip_vit_l14_d83d374",), 1652),
    ReleasedModel("OWL-ViT v1 L/14 with masks", ("clip_vit_l14_with_masks_6c17944",), 1844),
    ReleasedModel(
        "OWLv2 B/16 (self-trained / fine-tuned / ensemble)",
        (
            "owl2-b16-960-st-ngrams_c7e1b9a",
            "owl2-b16-960-st-ngrams-ft-lvisbase_d368398",
            "owl2-b16-960-st-ngrams-curated-ft-lvisbase-ens-cold-weight-05_209b65b",
        ),
        590,
    ),
    ReleasedModel(
        "OWLv2 L/14 (self-trained / fine-tuned / ensemble)",
        (
            "owl2-l14-1008-st-ngrams_0881fd6",
            "owl2-l14-1008-st-ngrams-ft-lvisbase_8ca674c",
            "owl2-l14-1008-st-ngrams-ft-lvisbase-ens-cold-weight-04_8ca674c",
        ),
        1666,
    ),
)
RELEASED_NAMES = frozenset(name for model in RELEASED for name in model.names)

# scheme → how to download one URL of it into the current directory (`{url}` shell-quoted).
DOWNLOADERS = {
    "https": "curl -LO {url}",
    "http": "curl -LO {url}",
    "gs": "gsutil cp {url} .",
    "s3": "aws s3 cp {url} .",
}
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://\S")


def download_url(name: str) -> str:
    """Where a released checkpoint can be downloaded from over HTTPS."""
    return BUCKET_URL + name


def download_command(source: str) -> str | None:
    """The command that fetches `source` (a URL, or a released checkpoint's name, possibly
    with a directory in front) when it is one; None for anything else."""
    found = _URL_RE.match(source)
    if found:
        template = DOWNLOADERS.get(found.group("scheme").lower())
        return template.format(url=shlex.quote(source)) if template else None
    if os.path.basename(source) not in RELEASED_NAMES:
        return None
    url = shlex.quote(download_url(os.path.basename(source)))
    if os.path.dirname(source):  # where the user expects it, not the current directory
        return f"curl -L -o {shlex.quote(source)} {url}"
    return f"curl -LO {url}"


def refuse_remote(source: str | os.PathLike[str]) -> None:
    """Raise `CheckpointError` with the download command when `source` names a released
    checkpoint or a URL and no such local file exists; return otherwise.

    Called with the text as the user typed it: a `Path` would already have folded a URL's
    `//` into `/`."""
    text = os.fspath(source)
    if os.path.lexists(text):
        return
    command = download_command(text)
    if command is None:
        return
    if _URL_RE.match(text):
        what = f"{text} is a URL, and checkpoints are read from local files only"
    else:
        name = os.path.basename(text)
        which = "it" if name == text else name
        what = f"{text}: no such file; {which} is the name of a released checkpoint"
    raise CheckpointError(f"{what}; download it first: {command}")
