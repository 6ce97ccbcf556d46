"""Train the shapes-demo generator (aMUSEd ``UVit2DModel`` architecture) jointly with its small CLIP
text encoder, MaskGIT-style, on the shapes world's train split.

Exact command (background, resumable: the same command continues from the latest checkpoint in
``/root/.cache/tcts-train/shapes/gen``; needs ``codes.safetensors`` from ``fit_codes.py``)::

    nohup nice -n 19 .venv/bin/python lab/scripts/train_generator.py \
        >> /root/.cache/tcts-train/shapes/gen.out 2>&1 &

``--world v3`` trains on world v3 (:mod:`lab.shapes.world_v3`) in ``/root/.cache/tcts-train/shapes-v3``
(codes from ``lab/scripts/build_alphabet_v3.py``); its command is in ``docs/shapes-world.md``, "World v3".

Recipe:

* targets: the k-means patch codes of 64 px renders (8 x 8 tokens, 1024 codes; the neural VQ of
  ``train_vq.py`` reproduces these ids and decodes them);
* text: ``CLIPTextModelWithProjection`` (3 layers x 128) from scratch with the world tokenizer; the
  generator gets ``hidden_states[-2]`` and the projected pooled output exactly as at inference, and
  gradients flow into the text encoder;
* MaskGIT: per image a mask ratio ``cos(pi/2 * u)``, ``u ~ U(0,1)``, at least one masked token,
  cross-entropy on masked tokens only; 10 % of captions dropped to ``""`` (so CFG with the encoded
  empty negative prompt works); micro-conds ``[64, 64, 0, 0, 6]``;
* curriculum: more single-object scenes for the first ``--curriculum`` steps;
* AdamW (lr 8e-4 after 300 warm-up steps, optionally a cosine decay to ``--lr-final`` from
  ``--decay-start`` over ``--decay-steps``; wd 0.01, betas 0.9/0.99), grad-clip 1, EMA 0.999 of the
  weights (evaluation and export use the EMA);
* every ``--eval-every-s`` seconds: generate the 100 fixed held-out captions (12 steps, cfg 3,
  sampler uniform, and purity every second time; or ``--eval-samplers`` every time at ``--eval-steps``)
  and log the detector's per-attribute accuracy (``eval`` lines).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tcts.models.uvit import UVit2DTransformer  # noqa: E402
from lab.shapes.checkpointing import (DEFAULT_ROOT, Logger, latest_checkpoint, load_checkpoint,  # noqa: E402
                                       save_checkpoint)
from lab.shapes.patchcodes import PatchCodebook  # noqa: E402
from lab.shapes.text import WordTokenizer, build_tokenizer_files, text_encoder_config  # noqa: E402
from lab.shapes.worlds import WORLD_NAMES, World, get_world  # noqa: E402

ROOT = DEFAULT_ROOT / "shapes"
MICRO = [64.0, 64.0, 0.0, 0.0, 6.0]


@dataclass(frozen=True)
class GeneratorSize:
    """The sizes of a demo generator (the rest of its UVit2DModel config is fixed)."""

    hidden: int = 256
    layers: int = 6
    heads: int = 4
    intermediate: int = 768
    block: int = 128
    res_blocks: int = 1


def generator_config(codebook_size: int, text_hidden: int, text_proj: int, size: GeneratorSize = GeneratorSize()
                     ) -> dict:
    hidden, layers, heads, intermediate, block, res_blocks = (size.hidden, size.layers, size.heads, size.intermediate,
                                                              size.block, size.res_blocks)
    return {
        "_class_name": "UVit2DModel",
        "_diffusers_version": "0.42.1",
        "attention_dropout": 0.0,
        "block_num_heads": max(1, block // 64),
        "block_out_channels": block,
        "codebook_size": codebook_size,
        "cond_embed_dim": text_proj,
        "downsample": False,
        "encoder_hidden_size": text_hidden,
        "hidden_dropout": 0.0,
        "hidden_size": hidden,
        "in_channels": block,
        "intermediate_size": intermediate,
        "layer_norm_eps": 1e-06,
        "ln_elementwise_affine": True,
        "micro_cond_embed_dim": 5 * 16,
        "micro_cond_encode_dim": 16,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_res_blocks": res_blocks,
        "sample_size": 8,
        "upsample": False,
        "use_bias": False,
        "vocab_size": int(math.ceil((codebook_size + 1) / 8) * 8),
    }


def run_root(world: str) -> Path:
    """Where a world's training runs live (v2: the historical ``shapes`` folder)."""
    return ROOT if world == "v2" else DEFAULT_ROOT / f"shapes-{world}"


def count_probs(step: int, curriculum: int) -> tuple[float, float, float]:
    if step < curriculum // 2:
        return (0.8, 0.2, 0.0)
    if step < curriculum:
        return (0.6, 0.3, 0.1)
    return (0.45, 0.40, 0.15)


class Batcher:
    def __init__(self, codes: PatchCodebook, tok: WordTokenizer, seed: int, curriculum: int, drop: float,
                 world: World) -> None:
        self.codes, self.tok, self.seed, self.curriculum, self.drop = codes, tok, seed, curriculum, drop
        self.world = world
        self.cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            if len(self.cache) > 200_000:
                self.cache.clear()
            self.cache[text] = self.tok(text)
        return self.cache[text]

    def __call__(self, step: int, batch: int):
        probs = count_probs(step, self.curriculum)
        scenes = [self.world.sample_scene([self.seed, step, i], "train", count_probs=probs) for i in range(batch)]
        images = self.world.render_batch(scenes)
        target = self.codes.encode(images)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        keep = torch.rand(batch, generator=g) >= self.drop
        captions = [s.caption if k else "" for s, k in zip(scenes, keep.tolist())]
        text_ids = torch.tensor([self.ids(c) for c in captions])
        n = target[0].numel()
        ratio = torch.cos(math.pi / 2 * torch.rand(batch, generator=g))
        n_mask = (ratio * n).ceil().clamp(min=1).long()
        order = torch.rand(batch, n, generator=g).argsort(1)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(batch, n))
        masked = (ranks < n_mask[:, None]).view_as(target)
        return target, masked, text_ids, captions


def encode_text(text_model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = text_model(ids, output_hidden_states=True, return_dict=True)
    return out.hidden_states[-2], out.text_embeds


def build(args, vocab_size: int, codebook_size: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tcfg = text_encoder_config(vocab_size, hidden=args.text_hidden, layers=3, heads=max(1, args.text_hidden // 64),
                               intermediate=2 * args.text_hidden, projection=args.text_hidden)
    text_model = CLIPTextModelWithProjection(CLIPTextConfig(**{k: v for k, v in tcfg.items() if k != "architectures"}))
    gcfg = generator_config(codebook_size, args.text_hidden, args.text_hidden, GeneratorSize(
        hidden=args.hidden, layers=args.layers, heads=max(1, args.hidden // 64), intermediate=args.intermediate,
        block=args.block, res_blocks=args.res_blocks))
    gen = UVit2DTransformer(gcfg)
    return text_model, tcfg, gen, gcfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="v2", choices=WORLD_NAMES, help="shapes world (lab/shapes/worlds.py)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: <runs of the world>/gen)")
    ap.add_argument("--codes", type=Path, default=None, help="default: <runs of the world>/codes.safetensors")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--decay-start", type=int, default=None,
                    help="step at which the learning rate starts a cosine decay (default: constant)")
    ap.add_argument("--decay-steps", type=int, default=3000)
    ap.add_argument("--lr-final", type=float, default=4e-5)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--curriculum", type=int, default=1000)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--res-blocks", type=int, default=3,
                    help="ConvNeXt+SkipFF blocks before/after the transformer; with zero padding they are the "
                         "only source of position information (3 x 3-conv radius 3 covers the 8 x 8 grid)")
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-every-s", type=float, default=300)
    ap.add_argument("--eval-every-s", type=float, default=1200)
    ap.add_argument("--eval-captions", type=int, default=100)
    ap.add_argument("--eval-samplers", nargs="+", default=None,
                    help="samplers of every evaluation (default: uniform, and purity every second time)")
    ap.add_argument("--eval-steps", type=int, default=12)
    ap.add_argument("--eval-vq", type=Path, default=None,
                    help="VQ folder that decodes evaluation images (default <runs of the world>/vq/final when it "
                         "exists, else the patch tiles); 'none': always the patch tiles")
    ap.add_argument("--threads", type=int, default=1, help="1 is far faster than 2 on a shared, busy CPU")
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit (no saving)")
    args = ap.parse_args()
    root = run_root(args.world)
    args.out = args.out or root / "gen"
    args.codes = args.codes or root / "codes.safetensors"
    eval_vq = None if str(args.eval_vq) == "none" else (args.eval_vq or root / "vq" / "final")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    log = Logger(args.out / "train.log") if not args.bench else print

    codes = PatchCodebook.load(args.codes)
    vocab = build_tokenizer_files(args.out / "tokenizer")
    tok = WordTokenizer(vocab)
    text_model, tcfg, gen, gcfg = build(args, len(vocab), codes.size)
    modules = {"text": text_model, "gen": gen}
    params = [p for m in modules.values() for p in m.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99), foreach=True)
    ema = {k: copy.deepcopy(m).requires_grad_(False) for k, m in modules.items()}
    step, history = 0, []
    ckpt = None if args.bench else latest_checkpoint(args.out)
    if ckpt is not None:
        saved_world = json.loads((ckpt / "state.json").read_text()).get("world", "v2")
        if saved_world != args.world:
            sys.exit(f"{ckpt} is a world {saved_world} run; this command trains world {args.world}")
        state, _ = load_checkpoint(ckpt, {**modules, **{f"ema_{k}": m for k, m in ema.items()}}, opt)
        step = int(state["step"])
        history = state.get("history", [])
        log(f"resumed from {ckpt} at step {step} ({state.get('images_seen', 0)} images seen)")
    else:
        n_gen = sum(p.numel() for p in gen.parameters())
        n_text = sum(p.numel() for p in text_model.parameters())
        log(f"new generator run: generator {n_gen} params, text encoder {n_text} params, args {vars(args)}")
        log(f"generator config {json.dumps(gcfg)}")
        log(f"text config {json.dumps(tcfg)}")
    (args.out / "generator_config.json").write_text(json.dumps(gcfg, indent=2, sort_keys=True))
    (args.out / "text_encoder_config.json").write_text(json.dumps(tcfg, indent=2, sort_keys=True))

    batcher = Batcher(codes, tok, args.seed, args.curriculum, args.drop, get_world(args.world))
    mask_id = gen.mask_token_id
    micro = torch.tensor([MICRO]).expand(args.batch, -1)
    t_start, last_save, last_eval = time.time(), time.time(), time.time()
    seen0, loss_acc, acc_acc, n_acc, t_data = 0, 0.0, 0.0, 0, 0.0
    images_seen = step * args.batch
    end = step + args.bench if args.bench else args.max_steps
    stop, n_evals = [], 0
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def save() -> None:
        save_checkpoint(args.out, {**modules, **{f"ema_{k}": m for k, m in ema.items()}},
                        {"step": step, "images_seen": images_seen, "world": args.world,
                         "args": vars(args) | {"out": str(args.out), "codes": str(args.codes), "eval_vq": str(eval_vq)},
                         "generator_config": gcfg, "text_config": tcfg, "history": history[-2000:]}, opt)

    while step < end and not stop:
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if args.decay_start is not None and step >= args.decay_start:
            done = min(1.0, (step - args.decay_start) / max(1, args.decay_steps))
            lr = args.lr_final + (args.lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * done))
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.time()
        target, masked, text_ids, _ = batcher(step, args.batch)
        t_data += time.time() - t0
        inputs = torch.where(masked, mask_id, target)
        hidden, pooled = encode_text(text_model, text_ids)
        logits = gen(inputs, hidden, pooled, micro)
        logits = logits.permute(0, 2, 3, 1)[masked]
        loss = F.cross_entropy(logits, target[masked])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        images_seen += args.batch
        seen0 += args.batch
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for k, m in modules.items():
                torch._foreach_lerp_(list(ema[k].parameters()), list(m.parameters()), 1 - d)
            loss_acc += loss.item()
            acc_acc += (logits.argmax(-1) == target[masked]).float().mean().item()
            n_acc += 1
        if step % 50 == 0 or args.bench:
            el = time.time() - t_start
            rec = {"step": step, "loss": round(loss_acc / n_acc, 4), "masked_acc": round(acc_acc / n_acc, 4),
                   "lr": lr, "img_s": round(seen0 / el, 2), "data_s_frac": round(t_data / el, 3),
                   "images_seen": images_seen, "probs": count_probs(step, args.curriculum)}
            log(f"train {json.dumps(rec)}")
            history.append([step, rec["loss"], rec["masked_acc"]])
            loss_acc = acc_acc = 0.0
            n_acc = 0
        if args.bench:
            continue
        now = time.time()
        if now - last_save > args.save_every_s:
            save()
            last_save = time.time()
        if now - last_eval > args.eval_every_s:
            try:
                from lab.shapes.evaluate import Evaluation, evaluate_models
                n_evals += 1
                samplers = args.eval_samplers or (("uniform",) if n_evals % 2 else ("uniform", "purity"))
                for sampler in samplers:
                    t_eval = time.time()
                    res = evaluate_models(ema["gen"], ema["text"], tok, codes, Evaluation(
                        sampler=sampler, n_captions=args.eval_captions, steps=args.eval_steps, vq_folder=eval_vq,
                        world=args.world))
                    log(f"eval {json.dumps({'step': step, 'images_seen': images_seen, 'sampler': sampler, **res, 'eval_s': round(time.time() - t_eval, 1)})}")
            except Exception as exc:  # noqa: BLE001 - evaluation must never stop training
                log(f"eval skipped: {type(exc).__name__}: {exc}")
            last_eval = time.time()
            t_start, seen0, t_data = time.time(), 0, 0.0
    if not args.bench:
        save()
        log(f"stopped at step {step} ({'SIGTERM' if stop else 'max steps'}); checkpoint saved")


if __name__ == "__main__":
    main()
