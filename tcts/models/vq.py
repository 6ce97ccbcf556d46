"""Native VQ-GAN of aMUSEd and Meissonic (diffusers ``VQModel``, f = 16, 8192 x 64 codebook).

Reference: diffusers ``models/autoencoders/vq_model.py`` (``VQModel.encode`` / ``decode``),
``models/autoencoders/vae.py`` (``Encoder``, ``Decoder``, ``VectorQuantizer``),
``models/resnet.py`` (``ResnetBlock2D``), ``models/downsampling.py`` (``Downsample2D``),
``models/upsampling.py`` (``Upsample2D``) and ``models/unets/unet_2d_blocks.py``
(``DownEncoderBlock2D``, ``UpDecoderBlock2D``, ``UNetMidBlock2D``).

Only the parts aMUSEd/Meissonic use are implemented: group-norm decoder (``norm_type="group"``),
SiLU activation, no codebook remapping. Module attribute names equal the diffusers checkpoint keys,
so ``load_state_dict(state_dict, strict=True)`` works on the released ``vqvae`` safetensors.

Pixels are in ``[0, 1]`` on both sides (the aMUSEd pipelines use ``do_normalize=False``); decoded
images are returned unclipped.

**Precision.** The VQ must run in fp32: in fp16 the reference produces NaN, which is why its config
has ``force_upcast: true`` and the pipelines upcast it. The methods here compute in the dtype of the
module's parameters (inputs are converted to it), so loaders must keep this module in fp32.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQModel", "vq_config_from_state_dict"]

_GN_EPS = 1e-6  # every GroupNorm of the VQ (vae.py Encoder/Decoder pass resnet_eps=1e-6)


class ResnetBlock2D(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus a 1x1 shortcut when channels change.

    diffusers ``resnet.py`` ``ResnetBlock2D`` with ``temb_channels=None``, ``output_scale_factor=1``,
    dropout 0 (inference).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=_GN_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=_GN_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Module):
    """Asymmetric zero pad (right and bottom by 1), then a 3x3 stride-2 conv.

    diffusers ``downsampling.py`` ``Downsample2D`` with ``use_conv=True, padding=0`` (the VQ encoder
    passes ``downsample_padding=0``). Halves H and W (even sizes).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2D(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv (diffusers ``upsampling.py`` ``Upsample2D``, ``use_conv=True``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    """``num_layers`` resnets, then an optional downsampler (``unet_2d_blocks.py`` ``DownEncoderBlock2D``)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)
        )
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if add_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
        return x


class UpDecoderBlock2D(nn.Module):
    """``num_layers`` resnets, then an optional upsampler (``unet_2d_blocks.py`` ``UpDecoderBlock2D``)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x)
        return x


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions with a GroupNorm in front and a residual.

    diffusers ``attention_processor.py`` ``Attention`` (``residual_connection=True``,
    ``norm_num_groups=groups``, ``bias=True``) run by ``AttnProcessor2_0``, as built by
    ``UNetMidBlock2D`` with ``attention_head_dim = channels`` (so one head). Only used when
    ``mid_block_add_attention`` is true; the aMUSEd/Meissonic VQ has it false.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=_GN_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)  # [B, HW, C]
        q = self.to_q(seq).unsqueeze(1)
        k = self.to_k(seq).unsqueeze(1)
        v = self.to_v(seq).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = self.to_out[0](out)
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class UNetMidBlock2D(nn.Module):
    """resnet, then (optional attention, resnet) once (``unet_2d_blocks.py`` ``UNetMidBlock2D``, ``num_layers=1``).

    Without attention, ``attentions`` is omitted entirely (diffusers stores ``[None]``, which has no keys).
    """

    def __init__(self, channels: int, groups: int, add_attention: bool) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)]) if add_attention else None
        self.resnets = nn.ModuleList(ResnetBlock2D(channels, channels, groups) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """conv_in -> down blocks -> mid block -> GN -> SiLU -> conv_out.

    diffusers ``vae.py`` ``Encoder`` with ``double_z=False``; down blocks 0..n-2 end with a downsampler.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: list[int],
        layers_per_block: int,
        groups: int,
        mid_block_add_attention: bool,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        n = len(block_out_channels)
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock2D(
                block_out_channels[max(i - 1, 0)],
                block_out_channels[i],
                layers_per_block,
                groups,
                add_downsample=i < n - 1,
            )
            for i in range(n)
        )
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], groups, mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, block_out_channels[-1], eps=_GN_EPS)
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """conv_in -> mid block -> up blocks -> GN -> SiLU -> conv_out (diffusers ``vae.py`` ``Decoder``, group norm).

    Up blocks run over ``reversed(block_out_channels)`` with ``layers_per_block + 1`` resnets each and a
    2x upsampler on all but the last block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: list[int],
        layers_per_block: int,
        groups: int,
        mid_block_add_attention: bool,
    ) -> None:
        super().__init__()
        rev = list(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(in_channels, rev[0], 3, padding=1)
        # Registered before mid_block, as in diffusers, so state_dict() key order matches the checkpoint.
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(rev[max(i - 1, 0)], rev[i], layers_per_block + 1, groups, add_upsample=i < len(rev) - 1)
            for i in range(len(rev))
        )
        self.mid_block = UNetMidBlock2D(rev[0], groups, mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, block_out_channels[0], eps=_GN_EPS)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VectorQuantizer(nn.Module):
    """The codebook only (key ``quantize.embedding.weight``); diffusers ``vae.py`` ``VectorQuantizer``."""

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim)

    def ids_from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` latents -> ``[B, h, w]`` ids of the nearest code.

        Same computation as ``VectorQuantizer.forward``: flatten NHWC, then
        ``argmin(torch.cdist(z_flat, codebook), dim=1)``. ``torch.cdist`` is kept (rather than an
        expanded ``|z|^2 + |e|^2 - 2 z.e``) so that ties and near-ties resolve to the same ids.
        """
        b, c, h, w = z.shape
        z_flat = z.permute(0, 2, 3, 1).contiguous().view(-1, c)
        ids = torch.argmin(torch.cdist(z_flat, self.embedding.weight), dim=1)
        return ids.view(b, h, w)

    def latents_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` ids -> ``[B, C, h, w]`` codebook vectors (``VectorQuantizer.get_codebook_entry``)."""
        return self.embedding(ids).permute(0, 3, 1, 2).contiguous()


# diffusers VQModel.__init__ defaults, used for keys a config.json omits.
_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 3,
    "num_vq_embeddings": 256,
    "norm_num_groups": 32,
    "vq_embed_dim": None,
    "norm_type": "group",
    "mid_block_add_attention": True,
}


class VQModel(nn.Module):
    """diffusers ``VQModel`` (``vq_model.py``) restricted to what aMUSEd/Meissonic need.

    Args:
        config: the ``vqvae/config.json`` dict. Read: ``in_channels``, ``out_channels``,
            ``block_out_channels``, ``layers_per_block``, ``latent_channels``, ``num_vq_embeddings``,
            ``vq_embed_dim`` (null -> ``latent_channels``), ``norm_num_groups``,
            ``mid_block_add_attention``; ``act_fn`` must be ``silu``, ``norm_type`` must be ``group``,
            block types must be ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``. Missing keys take the
            diffusers defaults.

    Attributes:
        config: the config dict (a copy).
        downscale_factor: ``2 ** (len(block_out_channels) - 1)`` pixels per token side (16 for aMUSEd).
        codebook_size: ``num_vq_embeddings`` (8192 for aMUSEd/Meissonic).
        latent_channels: channels of the encoder output / decoder input.

    The module computes in its parameter dtype; keep it fp32 (fp16 gives NaN in the reference).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = {**_DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "vq_embed_dim"}}
        if cfg["act_fn"] != "silu":
            raise ValueError(f"VQ config act_fn must be 'silu', got {cfg['act_fn']!r}")
        if cfg["norm_type"] != "group":
            raise ValueError(
                f"VQ config norm_type must be 'group' (spatial norm is not supported), got {cfg['norm_type']!r}"
            )
        block_out = [int(c) for c in cfg["block_out_channels"]]
        n = len(block_out)
        if n < 1:
            raise ValueError("VQ config block_out_channels must not be empty")
        for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            types = config.get(key)
            if types is not None and (len(types) != n or any(t != kind for t in types)):
                raise ValueError(f"VQ config {key} must be {n} x {kind!r} (one per block_out_channels), got {types!r}")
        groups = int(cfg["norm_num_groups"])
        for c in block_out:
            if c % groups != 0:
                raise ValueError(
                    f"VQ config: block_out_channels {block_out} must be divisible by norm_num_groups={groups}"
                )

        self.latent_channels = int(cfg["latent_channels"])
        self.codebook_size = int(cfg["num_vq_embeddings"])
        self.in_channels = int(cfg["in_channels"])
        self.out_channels = int(cfg["out_channels"])
        self.downscale_factor = 2 ** (n - 1)
        embed_dim = cfg["vq_embed_dim"] if cfg["vq_embed_dim"] is not None else self.latent_channels
        self.vq_embed_dim = int(embed_dim)
        lpb = int(cfg["layers_per_block"])
        attn = bool(cfg["mid_block_add_attention"])

        self.encoder = Encoder(self.in_channels, self.latent_channels, block_out, lpb, groups, attn)
        self.quant_conv = nn.Conv2d(self.latent_channels, self.vq_embed_dim, 1)
        self.quantize = VectorQuantizer(self.codebook_size, self.vq_embed_dim)
        self.post_quant_conv = nn.Conv2d(self.vq_embed_dim, self.latent_channels, 1)
        self.decoder = Decoder(self.latent_channels, self.out_channels, block_out, lpb, groups, attn)

    def _param(self) -> torch.Tensor:
        return self.quant_conv.weight

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W]`` pixels in [0, 1] -> ``[B, vq_embed_dim, H/f, W/f]`` pre-quantisation latents.

        Equals ``VQModel.encode(images).latents`` (encoder, then ``quant_conv``; vq_model.py).
        Raises ValueError unless images is 4-D with ``in_channels`` channels and H, W multiples of
        ``downscale_factor``.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a [B, {self.in_channels}, H, W] tensor, got {shape}")
        b, c, h, w = images.shape
        if c != self.in_channels:
            raise ValueError(
                f"images must have {self.in_channels} channels ([B, C, H, W]), got shape {tuple(images.shape)}"
            )
        f = self.downscale_factor
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"images height and width must be positive multiples of {f}, got H={h}, W={w}")
        p = self._param()
        x = images.to(device=p.device, dtype=p.dtype)
        return self.quant_conv(self.encoder(x))

    def encode_to_ids(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W]`` pixels in [0, 1] (no normalisation) -> ``[B, H/f, W/f]`` int64 code ids.

        Equals ``vqvae.quantize(vqvae.encode(images).latents)[2][2]`` reshaped to the grid
        (vq_model.py, vae.py ``VectorQuantizer.forward``: argmin of ``torch.cdist``).
        """
        return self.quantize.ids_from_latents(self.encode(images))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` code ids -> ``[B, out_channels, h*f, w*f]`` pixels, nominally [0, 1], NOT clipped.

        Equals ``vqvae.decode(ids, force_not_quantize=True, shape=(B, h, w, C)).sample`` with
        ``lookup_from_codebook=True`` (vq_model.py): codebook lookup, ``post_quant_conv``, decoder.
        Raises ValueError for non-integer / non-3-D ids or ids outside ``[0, codebook_size)``.
        """
        if not isinstance(ids, torch.Tensor) or ids.ndim != 3:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"ids must be a [B, h, w] integer tensor, got {shape}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() == 0:
            raise ValueError(f"ids must not be empty, got shape {tuple(ids.shape)}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(
                f"ids must lie in [0, {self.codebook_size}) (the VQ codebook size), got values in [{lo}, {hi}]"
                " (mask tokens must be replaced before decoding)"
            )
        p = self._param()
        z = self.quantize.latents_from_ids(ids.to(device=p.device, dtype=torch.long))
        return self.decoder(self.post_quant_conv(z))


_REQUIRED_KEYS = (
    "encoder.conv_in.weight",
    "encoder.down_blocks.0.resnets.0.conv1.weight",
    "encoder.conv_out.weight",
    "quant_conv.weight",
    "quantize.embedding.weight",
    "post_quant_conv.weight",
    "decoder.conv_in.weight",
    "decoder.up_blocks.0.resnets.0.conv1.weight",
    "decoder.conv_out.weight",
)


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def vq_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], norm_num_groups: Optional[int] = None) -> dict:
    """Infer a diffusers-style ``VQModel`` config from a bare VQ state dict (no config.json).

    Read from keys/shapes: ``block_out_channels`` (``encoder.down_blocks.{i}.resnets.0.conv1`` out
    channels), ``layers_per_block`` (resnets in encoder down block 0), ``latent_channels``
    (``encoder.conv_out``), ``num_vq_embeddings`` / ``vq_embed_dim`` (``quantize.embedding``;
    ``vq_embed_dim`` is None when equal to ``latent_channels``, as in the released config),
    ``in_channels`` / ``out_channels`` and ``mid_block_add_attention`` (presence of
    ``encoder.mid_block.attentions.0.*``).

    ``norm_num_groups`` cannot be read from shapes: it defaults to 32 (the released aMUSEd/Meissonic
    VQ); pass it explicitly for other checkpoints. Raises ValueError naming the missing keys when the
    dict is not a diffusers VQ model, or for a spatial-norm (MoVQ) decoder, which is unsupported.
    """
    keys = list(state_dict.keys())
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise ValueError(f"not a diffusers VQModel state dict: missing keys {missing}")
    if any(k.startswith("decoder.conv_norm_out.norm_layer.") for k in keys):
        raise ValueError(
            "VQ state dict has a spatial-norm decoder (decoder.conv_norm_out.norm_layer.*), which is not supported"
        )

    n_blocks = len(_indices(keys, r"encoder\.down_blocks\.(\d+)\."))
    block_out = []
    for i in range(n_blocks):
        key = f"encoder.down_blocks.{i}.resnets.0.conv1.weight"
        if key not in state_dict:
            raise ValueError(f"not a diffusers VQModel state dict: missing keys ['{key}']")
        block_out.append(int(state_dict[key].shape[0]))
    layers_per_block = len(_indices(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
    latent_channels = int(state_dict["encoder.conv_out.weight"].shape[0])
    num_codes, embed_dim = (int(s) for s in state_dict["quantize.embedding.weight"].shape)
    return {
        "_class_name": "VQModel",
        "act_fn": "silu",
        "block_out_channels": block_out,
        "down_block_types": ["DownEncoderBlock2D"] * n_blocks,
        "in_channels": int(state_dict["encoder.conv_in.weight"].shape[1]),
        "latent_channels": latent_channels,
        "layers_per_block": layers_per_block,
        "lookup_from_codebook": True,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in state_dict,
        "norm_num_groups": 32 if norm_num_groups is None else int(norm_num_groups),
        "norm_type": "group",
        "num_vq_embeddings": num_codes,
        "out_channels": int(state_dict["decoder.conv_out.weight"].shape[0]),
        "up_block_types": ["UpDecoderBlock2D"] * n_blocks,
        "vq_embed_dim": None if embed_dim == latent_channels else embed_dim,
    }
