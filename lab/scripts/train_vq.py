"""Train the shapes-world VQ (aMUSEd ``VQModel`` family, tiny widths, f = 8: 64 px -> 8 x 8 tokens).

Exact command (background, resumable; re-running the same command continues from the latest
checkpoint in ``/root/.cache/tcts-train/shapes/vq``; needs ``codes.safetensors`` from ``fit_codes.py``)::

    nohup nice -n 19 .venv/bin/python lab/scripts/train_vq.py --steps 3000 \
        >> /root/.cache/tcts-train/shapes/vq.out 2>&1 &

Recipe. The codebook is the k-means patch alphabet of ``fit_codes.py`` (``quantize.embedding.weight``
= the 1024 x 32 k-means centres in patch-PCA space, frozen), so the VQ's ids are exactly the
generator's training targets:

* the encoder is trained to put every cell's latent on its assigned code: commitment loss
  ``|z - sg(e[id])|^2`` plus 0.1 x cross-entropy of ``-|z - e_k|^2`` over the codes (so that the
  nearest code, which ``encode_to_ids`` picks, is the assigned one);
* the decoder is trained on the assigned codes with a reconstruction loss (MSE + L1, object pixels
  (chroma > 0.2, dilated) weighted 4x);
* renders of the whole world (1–3 objects, uniform counts; a tokenizer sees images, not captions),
  batch 16, Adam 1e-3 with cosine decay to 1e-4.

The final model is written to ``<out>/final/`` as ``config.json`` + ``diffusion_pytorch_model.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file  # noqa: E402

from tcts.models.vq import VQModel  # noqa: E402
from lab.shapes.checkpointing import (DEFAULT_ROOT, Logger, latest_checkpoint, load_checkpoint,  # noqa: E402
                                       save_checkpoint)
from lab.shapes.patchcodes import PatchCodebook  # noqa: E402
from lab.shapes.world import render_batch, sample_scene  # noqa: E402

VQ_CONFIG = {
    "_class_name": "VQModel",
    "_diffusers_version": "0.42.1",
    "act_fn": "silu",
    "block_out_channels": [16, 16, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 32,
    "layers_per_block": 1,
    "lookup_from_codebook": True,
    "mid_block_add_attention": False,
    "norm_num_groups": 8,
    "norm_type": "group",
    "num_vq_embeddings": 1024,
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "vq_embed_dim": None,
}


def batch_images(step: int, batch: int, seed: int, size: int = 64) -> torch.Tensor:
    scenes = [sample_scene([seed, step, i], "any", count_probs=(1, 1, 1)) for i in range(batch)]
    return render_batch(scenes, size)


def object_weight(x: torch.Tensor) -> torch.Tensor:
    chroma = x.max(1, keepdim=True).values - x.min(1, keepdim=True).values
    obj = (chroma > 0.2).float()
    obj = F.max_pool2d(obj, 3, 1, 1)
    return 1 + 3 * obj


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a.clamp(0, 1), b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_ROOT / "shapes" / "vq")
    ap.add_argument("--codes", type=Path, default=DEFAULT_ROOT / "shapes" / "codes.safetensors")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--save-every-s", type=float, default=300)
    ap.add_argument("--threads", type=int, default=1, help="1 is far faster than 2 on a shared, busy CPU")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    log = Logger(args.out / "train.log")
    codes = PatchCodebook.load(args.codes)
    config = dict(VQ_CONFIG, latent_channels=codes.dim, num_vq_embeddings=codes.size)

    model = VQModel(config)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(codes.codebook)
    model.quantize.embedding.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, foreach=True)
    step = 0
    ckpt = latest_checkpoint(args.out)
    if ckpt is not None:
        state, _ = load_checkpoint(ckpt, {"vq": model}, opt)
        step = state["step"]
        log(f"resumed from {ckpt} at step {step}")
    else:
        log(f"new VQ run: {json.dumps(config)} params={sum(p.numel() for p in model.parameters())}")
    codebook = model.quantize.embedding.weight

    last_save, t0, seen = time.time(), time.time(), 0
    stats = {"rec": 0.0, "commit": 0.0, "agree": 0.0, "psnr": 0.0, "n": 0}
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while step < args.steps and not stop:
        lr = 1e-4 + (args.lr - 1e-4) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        images = batch_images(step, args.batch, args.seed)
        target = codes.encode(images)                                     # [B, 8, 8]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        z = model.encode(x)                                               # [B, D, 8, 8]
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = codebook[target.reshape(-1)]
        commit = F.mse_loss(zf, e)
        d2 = torch.cdist(zf, codebook) ** 2
        ce = F.cross_entropy(-d2, target.reshape(-1))
        y = model.decoder(model.post_quant_conv(model.quantize.latents_from_ids(target)))
        w = object_weight(x)
        rec = ((y - x) ** 2 * w).mean() + ((y - x).abs() * w).mean()
        loss = rec + commit + 0.1 * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += x.shape[0]
        with torch.no_grad():
            stats["rec"] += rec.item()
            stats["commit"] += commit.item()
            stats["agree"] += (d2.argmin(1) == target.reshape(-1)).float().mean().item()
            stats["psnr"] += psnr(y, x)
            stats["n"] += 1
        if step % 25 == 0:
            n = stats.pop("n")
            log(f"step {step} " + " ".join(f"{k} {v / n:.4f}" for k, v in stats.items())
                + f" lr {lr:.2e} img/s {seen / (time.time() - t0):.2f}")
            stats = {k: 0.0 for k in stats} | {"n": 0}
        if time.time() - last_save > args.save_every_s or step == args.steps or stop:
            save_checkpoint(args.out, {"vq": model}, {"step": step, "config": config}, opt)
            last_save = time.time()
    if stop:
        log(f"stopped at step {step} (SIGTERM); checkpoint saved")
        return

    model.eval()
    final = args.out / "final"
    final.mkdir(parents=True, exist_ok=True)
    (final / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(final / "diffusion_pytorch_model.safetensors"))
    with torch.no_grad():
        for split in ("train", "heldout"):
            images = render_batch([sample_scene([7, i], split) for i in range(128)])
            x = torch.from_numpy(images).permute(0, 3, 1, 2)
            ids = model.encode_to_ids(x)
            agree = float((ids == codes.encode(images)).float().mean())
            log(f"final {split}: id agreement with the k-means codes {agree:.4f}, "
                f"decode psnr {psnr(model.decode_ids(ids), x):.2f}")
    log(f"wrote {final}")


if __name__ == "__main__":
    main()
