"""`edgevit dataset`: write a built-in labelled data set as image folders (what --calib, --data, --eval read)."""
from __future__ import annotations

from pathlib import Path

import click

from ._group import cli
from ._ui import out, print_json, progress_display

SETS = ("fashion-mnist", "digits")


@cli.command("dataset")
@click.argument("name", type=click.Choice(SETS))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder to create: OUTPUT/<class>/<n>.png (it must not exist yet).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]),
              help="fashion-mnist: train (60,000) or test (10,000); digits: the seeded 75/25 split.")
@click.option("--size", default=64, show_default=True, type=click.IntRange(8, 1024),
              help="Square side the 28x28 (8x8 digits) images are upsampled to.")
@click.option("--limit", type=click.IntRange(1), help="Evenly spread subset of this many images.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def dataset_cmd(name: str, output: Path, split: str, size: int, limit: int | None, as_json: bool) -> None:
    """Write data set NAME as labelled image folders, written whole or not at all."""
    import numpy as np

    from .._io import atomic_directory
    from ..data import digits, fashion_mnist, split_indices, write_labelled_folder
    from ..errors import EdgevitError

    if output.exists():
        raise EdgevitError(f"{output} already exists; give a new folder with -o (nothing is overwritten).")
    with progress_display(enabled=not as_json) as progress:
        with progress.stage(f"reading {name} ({split})"):
            if name == "fashion-mnist":
                images, labels, classes = fashion_mnist(split, size, limit)
            else:
                images, labels, classes = digits(size)
                keep = split_indices(labels, 0.25, seed=0)[0 if split == "train" else 1]
                if limit is not None and limit < len(keep):
                    keep = keep[np.linspace(0, len(keep) - 1, num=limit).round().astype(int)]
                images, labels = images[keep], labels[keep]
        with progress.stage(f"writing {len(labels)} images", total=len(labels)) as advance, \
                atomic_directory(output) as tmp:
            write_labelled_folder(tmp, images, labels, classes)
            advance(len(labels))
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    summary = {"dataset": name, "split": split, "size": size, "images": int(len(labels)), "classes": counts,
               "folder": str(output)}
    if as_json:
        return print_json(summary)
    out.print(f"{name} {split}: {len(labels)} images, {len(classes)} classes, {size}x{size} -> {output}/")
