"""Tokenizer ceiling: the detector on VQ-reconstructed renders (and on the k-means patch tiles).

Exact command (a VQ folder with config.json + diffusion_pytorch_model.safetensors; ~1 min)::

    nice -n 19 .venv/bin/python lab/scripts/eval_vq.py /root/.cache/tcts-train/shapes/vq/final

Prints, for train and held-out captions: PSNR, agreement of the VQ's ids with the k-means codes,
detector metrics on the encode -> decode reconstructions, a shuffled-caption control, and the
whole-caption accuracy of the VQ decoder on the exact k-means ids (the ceiling for generations,
whose tokens are k-means ids) and of the k-means patch tiles.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tcts.checkpoints import load_vq  # noqa: E402
from lab.shapes.checkpointing import DEFAULT_ROOT  # noqa: E402
from lab.shapes.detector import score  # noqa: E402
from lab.shapes.patchcodes import PatchCodebook  # noqa: E402
from lab.shapes.world import render_batch, sample_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vq", type=Path)
    ap.add_argument("--codes", type=Path, default=DEFAULT_ROOT / "shapes" / "codes.safetensors")
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vq = load_vq(args.vq)
    codes = PatchCodebook.load(args.codes) if args.codes.is_file() else None
    for split in ("train", "heldout"):
        scenes = [sample_scene([7, i], split) for i in range(args.n)]
        captions = [s.caption for s in scenes]
        images = render_batch(scenes)
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        with torch.no_grad():
            ids = vq.encode_to_ids(x)
            y = vq.decode_ids(ids).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        rec = {"split": split, "psnr": round(float(10 * np.log10(1 / np.mean((y - images) ** 2))), 2),
               "vq": score(y, captions), "shuffled_control": score(y, captions[1:] + captions[:1])["whole"]}
        if codes is not None:
            rec["id_agreement"] = round(float((ids == codes.encode(images)).float().mean()), 4)
            rec["patch_tiles"] = score(codes.decode(codes.encode(images)), captions)["whole"]
            with torch.no_grad():   # the generator's ceiling: the VQ decoder on the exact k-means ids
                y2 = vq.decode_ids(codes.encode(images)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            rec["vq_decode_of_codes"] = score(y2, captions)["whole"]
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
