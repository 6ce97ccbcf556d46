"""A small CNN that knows the shapes world: the feature space of the sampler benchmark's image quality.

Fréchet distance (Heusel et al. 2017) and k-NN precision/recall (Kynkäänniemi et al. 2019) compare sets of
images in the feature space of a network trained on real images (Inception-v3 for natural images). Natural-
image features say little about 64 px renders of grey backgrounds and tiles, so this world gets its own
network, trained only on real renders (``lab/scripts/train_features.py``) to predict what a scene is made
of: the background kind and, for each of the six palette colours, whether an object of that colour is
present, its shape, its size and its centre. Its 64-d penultimate layer (before the heads, no activation)
is the feature vector (:func:`extract_features`), shifted by the mean of real features and divided by one
global scale (the root-mean-square of their per-dimension standard deviations), both measured on fresh real
renders after training and stored with the weights: distances keep their geometry and a Fréchet distance
reads in units of the real features' variance (two unrelated sets of this world score in the hundreds,
identical distributions 0).

Architecture: four 3 x 3 convolutions with stride 2 (64 -> 32 -> 16 -> 8 -> 4 px; 16, 32, 64, 64 channels,
ReLU), flatten, ``Linear(4*4*64, 64)`` = the features, then ReLU and one linear layer for all heads. About
0.13 M parameters (~0.5 MB in fp32). A folder holds ``model.safetensors`` + ``config.json``
(:func:`save_feature_net` / :func:`load_feature_net`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from tcts.atomic import atomic_write
from tcts.checkpoints import CheckpointError, load_strict, read_json, read_safetensors
from .world import BACKGROUNDS, COLOURS, GRID, SHAPES, SIZES, Scene

FORMAT = "tcts-shapes-features"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COLOUR_NAMES = tuple(COLOURS)
SIZE_NAMES = tuple(SIZES)
# per colour: present (1 logit), shape (3), size (2), centre (x, y)
PER_COLOUR = 1 + len(SHAPES) + len(SIZE_NAMES) + 2
TRAIN_COMMAND = "python lab/scripts/train_features.py --out {folder}"


@dataclass
class FeatureConfig:
    """What rebuilds a :class:`FeatureNet`; saved as ``config.json`` beside the weights."""

    channels: tuple[int, ...] = (16, 32, 64, 64)
    feature_dim: int = 64
    image_size: int = 64
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)   # training settings and validation metrics

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"image size {self.image_size} is not divisible by 2^{len(self.channels)}")

    @property
    def head_size(self) -> int:
        return len(BACKGROUNDS) + len(COLOUR_NAMES) * PER_COLOUR


class FeatureNet(nn.Module):
    """``features(images [B, H, W, 3] in [0, 1]) -> [B, feature_dim]``; ``forward`` adds the head logits."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureConfig()
        layers: list[nn.Module] = []
        prev = 3
        for ch in self.config.channels:
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.ReLU()]
            prev = ch
        self.convs = nn.Sequential(*layers)
        side = self.config.image_size // 2 ** len(self.config.channels)
        self.embed = nn.Linear(prev * side * side, self.config.feature_dim)
        self.head = nn.Linear(self.config.feature_dim, self.config.head_size)
        # feature normalisation (set by calibrate(); identity until then)
        self.register_buffer("feature_shift", torch.zeros(self.config.feature_dim))
        self.register_buffer("feature_scale", torch.ones(1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != self.config.image_size:
            raise ValueError(f"feature net expects [B, {self.config.image_size}, {self.config.image_size}, 3] "
                             f"images; got shape {tuple(images.shape)}")
        return (self.embedding(images) - self.feature_shift) / self.feature_scale

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer before normalisation (what the heads read)."""
        x = images.permute(0, 3, 1, 2).float() * 2 - 1
        return self.embed(self.convs(x).flatten(1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw embedding ``[B, D]``, head logits ``[B, head_size]``; split them with :func:`split_heads`)."""
        emb = self.embedding(images)
        return emb, self.head(torch.relu(emb))

    @torch.no_grad()
    def calibrate(self, real_images: torch.Tensor) -> None:
        """Set the feature normalisation from real images ``[N, H, W, 3]`` (N >= 2)."""
        emb = torch.cat([self.embedding(real_images[i:i + 256]).double() for i in range(0, len(real_images), 256)])
        self.feature_shift.copy_(emb.mean(0).float())
        self.feature_scale.fill_(float(emb.var(0).mean().sqrt().clamp_min(1e-8)))


def split_heads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Head logits -> ``background [B, 5]``, ``present [B, 6]``, ``shape [B, 6, 3]``, ``size [B, 6, 2]``,
    ``centre [B, 6, 2]``."""
    nb, nc = len(BACKGROUNDS), len(COLOUR_NAMES)
    per = logits[:, nb:].reshape(-1, nc, PER_COLOUR)
    s0, s1 = 1, 1 + len(SHAPES)
    return {"background": logits[:, :nb], "present": per[..., 0], "shape": per[..., s0:s1],
            "size": per[..., s1:s1 + len(SIZE_NAMES)], "centre": per[..., -2:]}


def scene_targets(batch: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Training targets of scenes: background index; per colour present (0/1), shape and size index
    (-100 = absent, ignored) and the tile centre in [0, 1] (0 when absent)."""
    n, nc = len(batch), len(COLOUR_NAMES)
    bg = torch.tensor([BACKGROUNDS.index(s.background.kind) for s in batch])
    present = torch.zeros(n, nc)
    shape = torch.full((n, nc), -100, dtype=torch.long)
    size = torch.full((n, nc), -100, dtype=torch.long)
    centre = torch.zeros(n, nc, 2)
    for i, scene in enumerate(batch):
        for o in scene.objects:
            c = COLOUR_NAMES.index(o.colour)
            present[i, c] = 1
            shape[i, c] = SHAPES.index(o.shape)
            size[i, c] = SIZE_NAMES.index(o.size)
            centre[i, c] = torch.tensor([(o.x + o.cells / 2) / GRID, (o.y + o.cells / 2) / GRID])
    return {"background": bg, "present": present, "shape": shape, "size": size, "centre": centre}


@torch.inference_mode()
def extract_features(net: FeatureNet, images: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
    """Features ``[N, D]`` (float64) of images ``[N, H, W, 3]`` in [0, 1]."""
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    was_training = net.training
    net.train(False)
    try:
        out = [net.features(images[i:i + batch]).double() for i in range(0, len(images), batch)]
    finally:
        net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, net.config.feature_dim))


def save_feature_net(net: FeatureNet, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` (created; files replaced atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    config = asdict(net.config)
    atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))
    atomic_write(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def load_feature_net(folder: str | Path) -> FeatureNet:
    """Load a feature-net folder strictly; missing or foreign folders raise :class:`CheckpointError` with the
    command that trains one."""
    folder = Path(folder)
    hint = f"train it with: {TRAIN_COMMAND.format(folder=folder)}"
    if not folder.is_dir():
        raise CheckpointError(f"feature network {folder} does not exist (the benchmark's FD and precision/recall "
                              f"need it); {hint}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise CheckpointError(f"feature network folder {folder} has no {name}; {hint}")
    raw = read_json(folder / CONFIG_NAME)
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG_NAME} is not a shapes feature network (format "
                              f"{raw.get('format')!r}, expected {FORMAT!r}); {hint}")
    try:
        config = FeatureConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {exc}") from exc
    net = FeatureNet(config)
    load_strict(net, read_safetensors(folder / WEIGHTS_NAME), str(folder / WEIGHTS_NAME))
    return net.train(False).requires_grad_(False)
