"""Image–caption data for selector training, and the VQ token cache.

**Folder datasets.** A folder of images with one captions file at its root (paths are relative to it;
sub-folders are fine; several lines may name the same image, one caption each):

- ``captions.jsonl`` — one JSON object per line, ``{"file": "img_0001.png", "caption": "a red cube"}``
  (the Hugging Face ``imagefolder`` keys ``file_name`` / ``text`` are accepted too, so a
  ``metadata.jsonl`` renamed or symlinked to ``captions.jsonl`` works);
- ``captions.txt`` (or ``captions.tsv``) — ``file<TAB>caption`` per line; empty lines and lines
  starting with ``#`` are skipped.

Images are read with Pillow, converted to RGB, resized (shorter side, bicubic) to ``resolution`` and
centre-cropped to ``resolution × resolution``.

**In-memory datasets.** A list of ``(image, caption)`` pairs where ``image`` is a float tensor in [0, 1],
``[H, W, 3]`` (ComfyUI's layout) or ``[3, H, W]``, or an already tokenized long tensor ``[h, w]`` of
codebook ids (:class:`InMemoryCaptions`). All items must have one size.

**Token cache.** :func:`tokenize_dataset` encodes every distinct image once with the generator's VQ and
keeps the ids (``[M, h, w]``); with ``cache_file`` it also writes them as safetensors, keyed by a
fingerprint of the file list, sizes, mtimes, resolution and VQ codebook, and reuses a matching file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

CAPTION_FILES = ("captions.jsonl", "captions.txt", "captions.tsv")


@dataclass
class CaptionDataset:
    """Captions plus, per caption, the index of its image; ``images`` are paths, pixel tensors or token grids."""

    captions: list[str]
    image_index: list[int]              # caption i describes images[image_index[i]]
    images: list                        # Path | Tensor [H, W, 3] float | Tensor [h, w] long
    name: str = "dataset"

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def pretokenized(self) -> bool:
        return bool(self.images) and torch.is_tensor(self.images[0]) and not self.images[0].is_floating_point()

    def subset(self, indices: Sequence[int], name: str | None = None) -> "CaptionDataset":
        return CaptionDataset([self.captions[i] for i in indices], [self.image_index[i] for i in indices],
                              self.images, name or self.name)


def read_caption_file(folder: Path) -> list[tuple[str, str]]:
    """``(relative file, caption)`` pairs from the folder's captions file (see the module docstring)."""
    found = [folder / name for name in CAPTION_FILES if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder} has no captions file; expected one of {', '.join(CAPTION_FILES)} "
                                '(captions.jsonl lines {"file": "img.png", "caption": "…"} or captions.txt lines '
                                "file<TAB>caption)")
    path = found[0]
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (path.suffix != ".jsonl" and line.lstrip().startswith("#")):
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON: {exc}") from exc
            file, caption = row.get("file", row.get("file_name")), row.get("caption", row.get("text"))
        else:
            file, _, caption = line.partition("\t")
            if not _:
                raise ValueError(f"{path}:{number} has no TAB between file and caption")
        if not isinstance(file, str) or not isinstance(caption, str) or not file:
            raise ValueError(f'{path}:{number} needs a "file" and a "caption" string')
        pairs.append((file.strip(), caption.strip()))
    if not pairs:
        raise ValueError(f"{path} lists no images")
    return pairs


def caption_folder(root: str | Path) -> CaptionDataset:
    """A :class:`CaptionDataset` over a folder with a captions file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    files: dict[str, int] = {}
    images: list[Path] = []
    captions, index = [], []
    resolved_root = root.resolve()
    for file, caption in read_caption_file(root):
        path = (root / file).resolve()
        if resolved_root not in path.parents:
            raise ValueError(f"{file!r} in the captions file points outside the dataset folder")
        if not path.is_file():
            raise FileNotFoundError(f"{file!r} is listed in the captions file but {path} does not exist")
        if file not in files:
            files[file] = len(images)
            images.append(path)
        captions.append(caption)
        index.append(files[file])
    return CaptionDataset(captions, index, images, name=root.name)


def in_memory_captions(items: Sequence[tuple[torch.Tensor, str]], name: str = "in-memory") -> CaptionDataset:
    """A :class:`CaptionDataset` from ``(image [H, W, 3] / [3, H, W] float, or token grid [h, w] long, caption)``."""
    if not items:
        raise ValueError("the dataset is empty")
    images, captions = [], []
    for i, (image, caption) in enumerate(items):
        if not isinstance(caption, str):
            raise TypeError(f"item {i}: caption must be a string, got {type(caption).__name__}")
        image = torch.as_tensor(image)
        if image.is_floating_point():
            if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
                image = image.permute(1, 2, 0)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"item {i}: an image must be [H, W, 3] or [3, H, W]; got {tuple(image.shape)}")
        elif image.ndim != 2:
            raise ValueError(f"item {i}: a token grid must be [h, w] long; got {tuple(image.shape)}")
        else:
            image = image.long()
        images.append(image)
        captions.append(caption)
    kinds = {(img.is_floating_point(), tuple(img.shape)) for img in images}
    if len(kinds) > 1:
        raise ValueError(f"all items must have one kind and size; got {sorted(kinds)}")
    return CaptionDataset(captions, list(range(len(images))), images, name=name)


def load_dataset(source, name: str | None = None) -> CaptionDataset:
    """A folder path, an existing :class:`CaptionDataset`, or a list of (image/tokens, caption) pairs."""
    if isinstance(source, CaptionDataset):
        return source
    if isinstance(source, (str, Path)):
        return caption_folder(source)
    return in_memory_captions(list(source), name or "in-memory")


def load_rgb(path: Path, resolution: int) -> torch.Tensor:
    """Read, resize the shorter side to ``resolution`` (bicubic) and centre-crop -> ``[R, R, 3]`` in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from exc
    w, h = rgb.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        rgb = rgb.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    rgb = rgb.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


def fingerprint(dataset: CaptionDataset, resolution: int | None, codebook_size: int) -> str:
    digest = hashlib.sha256(f"{resolution}|{codebook_size}|{len(dataset.images)}".encode())
    for image in dataset.images:
        if isinstance(image, Path):
            stat = image.stat()
            digest.update(f"{image}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        else:
            digest.update(image.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def tokenize_dataset(dataset: CaptionDataset, vq: torch.nn.Module, resolution: int | None = None, *,
                     batch_size: int = 16, cache_file: str | Path | None = None,
                     progress=None) -> torch.Tensor:
    """Token ids ``[M, h, w]`` (long) for every distinct image of ``dataset`` (pretokenized grids as given).

    Folder images need ``resolution``; in-memory pixel tensors are used at their size. ``progress(done,
    total)`` is called after each batch.
    """
    if dataset.pretokenized:
        tokens = torch.stack(dataset.images)
        if tokens.min() < 0 or tokens.max() >= vq.codebook_size:
            raise ValueError(f"token grids of {dataset.name} hold ids outside [0, {vq.codebook_size}) (the VQ codebook)")
        return tokens
    key = fingerprint(dataset, resolution, int(vq.codebook_size))
    if cache_file is not None and Path(cache_file).is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(cache_file), framework="pt") as f:
                if (f.metadata() or {}).get("fingerprint") == key:
                    return f.get_tensor("tokens").long()
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            pass
    if any(isinstance(image, Path) for image in dataset.images) and not resolution:
        raise ValueError("folder datasets need a training resolution (pixels, e.g. 256)")
    device = next(vq.parameters()).device
    chunks = []
    total = len(dataset.images)
    for start in range(0, total, batch_size):
        batch = [load_rgb(img, resolution) if isinstance(img, Path) else img
                 for img in dataset.images[start:start + batch_size]]
        pixels = torch.stack(batch).permute(0, 3, 1, 2).to(device, torch.float32)
        chunks.append(vq.encode_to_ids(pixels).cpu())
        if progress is not None:
            progress(min(start + batch_size, total), total)
    tokens = torch.cat(chunks).long()
    if cache_file is not None:
        from safetensors.torch import save_file

        cache_file = Path(cache_file)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.tmp")
        save_file({"tokens": tokens.to(torch.int32).contiguous()}, str(tmp), metadata={"fingerprint": key})
        tmp.replace(cache_file)
    return tokens
