"""The model card's "how to use it" parts: a snippet that runs when pasted, what differs from
scenic, and citations."""

from __future__ import annotations

import json

from owlvit_cli.model.model_dir import FLAVORS, PROCESSOR_FILES, ModelDir

PIPELINE_TAG = "zero-shot-object-detection"
# The image processor that stretches instead of padding (transformers' stock v1 one); owlvit
# convert saves Owlv2ImageProcessor for both versions: it pads to a square as scenic does.
STRETCHING_PROCESSOR = "OwlViTImageProcessor"
# The picture transformers' own OWL-ViT documentation uses (two cats, two remote controls).
SNIPPET_IMAGE_URL = "http://images.cocodataset.org/val2017/000000039769.jpg"
SNIPPET_LABELS = ["a photo of a cat", "a photo of a remote control"]
# Per version: paper title, arXiv id, BibTeX key, authors, venue, year.
PAPERS = {
    1: (
        "Simple Open-Vocabulary Object Detection with Vision Transformers",
        "2205.06230",
        "minderer2022simple",
        "Minderer, Matthias and Gritsenko, Alexey and Stone, Austin and Neumann, Maxim and "
        "Weissenborn, Dirk and Dosovitskiy, Alexey and Mahendran, Aravindh and Arnab, Anurag "
        "and Dehghani, Mostafa and Shen, Zhuoran and Wang, Xiao and Zhai, Xiaohua and Kipf, "
        "Thomas and Houlsby, Neil",
        "European Conference on Computer Vision (ECCV)",
        2022,
    ),
    2: (
        "Scaling Open-Vocabulary Object Detection",
        "2306.09683",
        "minderer2023scaling",
        "Minderer, Matthias and Gritsenko, Alexey and Houlsby, Neil",
        "Advances in Neural Information Processing Systems (NeurIPS)",
        2023,
    ),
}


def card_usage(model_dir: ModelDir, repo_id: str) -> list[str]:
    """Two snippets that run as pasted: the image comes from a URL, and boxes are printed in
    the image's own pixels. These processors pad bottom/right to a square before resizing, so
    boxes are relative to that square: the target size is the longer side, twice."""
    flavor = FLAVORS[model_dir.version]
    model_class, processor_class = flavor.model_class, flavor.processor_class
    labels = json.dumps(SNIPPET_LABELS)
    if _image_processor_class(model_dir) == STRETCHING_PROCESSOR:
        scaling = [
            "# This processor stretches the image to a square: boxes scale by (height, width).",
            "size = image.size[::-1]",
        ]
    else:
        scaling = [
            "# Boxes are relative to the image padded bottom/right to a square: scale by its side.",
            "size = (max(image.size), max(image.size))",
        ]
    return [
        "## Usage",
        "",
        "With the pipeline (boxes in the image's pixels):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'detector = pipeline("{PIPELINE_TAG}", model="{repo_id}")',
        f'url = "{SNIPPET_IMAGE_URL}"',
        f"labels = {labels}",
        "for detection in detector(url, candidate_labels=labels, threshold=0.1):",
        '    print(detection["label"], round(detection["score"], 2), detection["box"])',
        "```",
        "",
        "With the processor and model classes:",
        "",
        "```python",
        "from io import BytesIO",
        "from urllib.request import urlopen",
        "",
        "import torch",
        "from PIL import Image",
        f"from transformers import {model_class}, {processor_class}",
        "",
        f'processor = {processor_class}.from_pretrained("{repo_id}")',
        f'model = {model_class}.from_pretrained("{repo_id}")',
        "",
        f'url = "{SNIPPET_IMAGE_URL}"',
        'image = Image.open(BytesIO(urlopen(url).read())).convert("RGB")',
        f"labels = [{labels}]",
        'inputs = processor(text=labels, images=image, return_tensors="pt")',
        "with torch.no_grad():",
        "    outputs = model(**inputs)",
        *scaling,
        "results = processor.post_process_grounded_object_detection(",
        "    outputs, threshold=0.1, target_sizes=[size], text_labels=labels",
        ")[0]",
        'for box, score, label in zip(results["boxes"], results["scores"], '
        'results["text_labels"]):',
        '    print(f"{label}: {score:.2f} at {[round(x, 1) for x in box.tolist()]}")',
        "```",
        "",
    ]


def card_caveats(model_dir: ModelDir) -> list[str]:
    """What differs from scenic, one sentence each."""
    processor = _image_processor_class(model_dir) or "the saved image processor"
    text = model_dir.config.get("text_config") or {}
    context = text.get("max_position_embeddings") if isinstance(text, dict) else None
    length = f"{context} tokens" if isinstance(context, int) else "the context length"
    if processor == STRETCHING_PROCESSOR:
        image_lines = [
            f"- **Preprocessing**: `{processor}` stretches the image to a square without "
            "padding, whereas scenic pads it bottom/right to a square before resizing, so "
            "detections on non-square images differ from scenic's.",
            "- **Boxes** are relative to the original image here (stretched, not padded), so "
            "scale them by (height, width), as the snippet above does.",
        ]
    else:
        image_lines = [
            f"- **Preprocessing**: `{processor}` pads the image bottom/right with 0.0 and then "
            "resizes it with anti-aliasing, whereas scenic's evaluator (behind the published "
            "COCO/LVIS numbers) resizes bilinearly without anti-aliasing so the long side fits "
            "and then pads with 0.0, and scenic's demo notebook pads with 0.5 gray before an "
            "anti-aliased resize, so pixels and scores on non-square images differ slightly "
            "from both.",
            "- **Boxes** are relative to that padded square, not to the original image, so "
            "scale them by the longer image side (`target_sizes=[(max(h, w), max(h, w))]`), "
            "as the snippet above does.",
        ]
    return [
        "## Differences from scenic",
        "",
        *image_lines,
        f"- **Tokenizer**: queries longer than {length} are truncated keeping the end token "
        "(scenic cuts it off), and text that spells a special token such as "
        "`<|endoftext|>` literally is tokenized differently from scenic.",
        "",
    ]


def _image_processor_class(model_dir: ModelDir) -> str | None:
    for name in PROCESSOR_FILES:
        try:
            data = json.loads((model_dir.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            nested = data.get("image_processor")
            found = nested.get("image_processor_type") if isinstance(nested, dict) else None
            found = found or data.get("image_processor_type")
            if isinstance(found, str) and found:
                return found.removesuffix("Fast")
    return None


def card_citations(version: int) -> list[str]:
    """BibTeX for OWL-ViT, and for OWLv2 models the OWLv2 paper too."""
    lines = ["## Citation", "", "```bibtex"]
    for paper in sorted(v for v in PAPERS if v <= version):
        title, _, key, authors, venue, year = PAPERS[paper]
        lines += [
            f"@inproceedings{{{key},",
            f"  title     = {{{title}}},",
            f"  author    = {{{authors}}},",
            f"  booktitle = {{{venue}}},",
            f"  year      = {{{year}}}",
            "}",
        ]
    return [*lines, "```", ""]
