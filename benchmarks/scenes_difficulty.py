"""How hard are the synthetic scenes? A small dense multitask conv net, trained briefly on CPU,
against trivial predictors that ignore the image, on held-out scenes.

Trivial predictors (fitted on the training set): seg = per-pixel most frequent class; depth =
per-pixel median depth (the MAE-optimal constant per pixel); normal = per-pixel mean normal,
normalised; keypoint and edge = per-pixel median (MAE-optimal). Perfect = accuracy/mIoU 100,
errors 0.

    .venv/bin/python benchmarks/scenes_difficulty.py [--steps 1500] \
        [--out docs/results/data_difficulty.md]

The model is defined here (self-contained, not the library's models): a small U-Net-like
encoder-decoder (output stride 2, upsampled bilinearly) with one 2-layer head per task. Losses:
cross-entropy (seg), L1 (depth, metres), 1 - cos (normal), and for keypoint and edge either L1
(``--sparse-loss l1``, the paper's) or binary cross-entropy on logits (``--sparse-loss bce``),
summed with equal weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.data.scenes import NUM_CLASSES, ScenesDataset

HEADS = {"seg": NUM_CLASSES, "depth": 1, "normal": 3, "keypoint": 1, "edge": 1}


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallDenseNet(nn.Module):
    """Encoder (stride 2, 4, 8, 16) - decoder with skip connections back to stride 2 - one head
    per task; outputs are upsampled bilinearly to the input size."""

    def __init__(self, heads: dict[str, int] = HEADS, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = conv_block(3, w, stride=2)
        self.enc2 = conv_block(w, 2 * w, stride=2)
        self.enc3 = conv_block(2 * w, 4 * w, stride=2)
        self.enc4 = conv_block(4 * w, 4 * w, stride=2)
        self.dec3 = conv_block(8 * w, 4 * w)
        self.dec2 = conv_block(6 * w, 2 * w)
        self.dec1 = conv_block(3 * w, w)
        self.heads = nn.ModuleDict(
            {
                task: nn.Sequential(
                    nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(w, c, 1)
                )
                for task, c in heads.items()
            }
        )

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([self._up(e4, e3), e3], 1))
        d2 = self.dec2(torch.cat([self._up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([self._up(d2, e1), e1], 1))
        return {task: self._up(head(d1), x) for task, head in self.heads.items()}


def losses(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], sparse_loss: str = "l1"
) -> torch.Tensor:
    """Sum of the task losses. ``sparse_loss`` for keypoint and edge: ``l1`` (the paper's) on
    the raw outputs, or ``bce`` (binary cross-entropy on logits, soft targets)."""
    normal = F.normalize(outputs["normal"], dim=1)
    sparse = F.l1_loss if sparse_loss == "l1" else F.binary_cross_entropy_with_logits
    return (
        F.cross_entropy(outputs["seg"], targets["seg"])
        + F.l1_loss(outputs["depth"], targets["depth"])
        + (1 - (normal * targets["normal"]).sum(1)).mean()
        + sparse(outputs["keypoint"], targets["keypoint"])
        + sparse(outputs["edge"], targets["edge"])
    )


def load(dataset: ScenesDataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s[0] for s in samples])
    targets = {t: torch.stack([s[1][t] for s in samples]) for t in HEADS}
    return images, targets


def metrics(pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> dict[str, float]:
    """Pooled over all pixels of the set. pred seg = class ids, normal = unit vectors."""
    seg_p, seg_g = pred["seg"].flatten(), gt["seg"].flatten()
    confusion = torch.bincount(seg_g * NUM_CLASSES + seg_p, minlength=NUM_CLASSES**2).reshape(
        NUM_CLASSES, NUM_CLASSES
    )
    tp = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    present = union > 0
    cosine = (pred["normal"] * gt["normal"]).sum(1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cosine))
    depth_err = (pred["depth"] - gt["depth"]).abs()
    return {
        "seg pixel acc %": 100 * float(tp.sum() / confusion.sum()),
        "seg mIoU %": 100 * float((tp[present] / union[present]).mean()),
        "depth abs err m": float(depth_err.mean()),
        "depth rel err": float((depth_err / gt["depth"]).mean()),
        "normal mean angle deg": float(angle.mean()),
        "normal % < 11.25 deg": 100 * float((angle < 11.25).double().mean()),
        "keypoint MAE": float((pred["keypoint"] - gt["keypoint"]).abs().mean()),
        "edge MAE": float((pred["edge"] - gt["edge"]).abs().mean()),
        "keypoint F1 (0.5) %": 100 * f1_at_half(pred["keypoint"], gt["keypoint"]),
        "edge F1 (0.5) %": 100 * f1_at_half(pred["edge"], gt["edge"]),
        "keypoint AP %": 100 * average_precision(pred["keypoint"], gt["keypoint"]),
        "edge AP %": 100 * average_precision(pred["edge"], gt["edge"]),
    }


def average_precision(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Average precision of the pixels with target > 0.5 when all pixels are ranked by the
    prediction (threshold-free: shows whether the outputs locate keypoints/edges at all; a
    constant prediction scores about the positive rate; ties keep pixel order)."""
    order = torch.argsort(pred.flatten(), descending=True, stable=True)
    hits = (gt.flatten() > 0.5)[order].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision * hits).sum() / hits.sum())


def f1_at_half(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """F1 score of the pixels above 0.5 (keypoint blob centres, edge pixels)."""
    p, g = pred > 0.5, gt > 0.5
    tp = float((p & g).sum())
    precision = tp / max(float(p.sum()), 1.0)
    recall = tp / max(float(g.sum()), 1.0)
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def trivial_predictor(train: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    prior = F.one_hot(train["seg"], NUM_CLASSES).sum(0).argmax(-1)
    mean_normal = F.normalize(train["normal"].mean(0), dim=0)
    per_pixel = {
        "seg": prior,
        "depth": train["depth"].median(0).values,
        "normal": mean_normal,
        "keypoint": train["keypoint"].median(0).values,
        "edge": train["edge"].median(0).values,
    }
    return {t: v[None].expand(count, *v.shape) for t, v in per_pixel.items()}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, sparse_loss: str) -> dict[str, torch.Tensor]:
    model.eval()
    chunks = [model(images[i : i + 64]) for i in range(0, len(images), 64)]
    out = {t: torch.cat([c[t] for c in chunks]) for t in HEADS}
    out["seg"] = out["seg"].argmax(1)
    out["normal"] = F.normalize(out["normal"], dim=1)
    if sparse_loss == "bce":
        out["keypoint"], out["edge"] = out["keypoint"].sigmoid(), out["edge"].sigmoid()
    return out


def train(
    model: nn.Module,
    images: torch.Tensor,
    targets: dict[str, torch.Tensor],
    steps: int,
    batch: int,
    seed: int,
    sparse_loss: str,
) -> float:
    """Adam, lr 2e-3 with cosine decay, random flips; returns the wall time in seconds."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(images), (batch,), generator=generator)
        x, y = images[idx], {t: v[idx] for t, v in targets.items()}
        if torch.rand((), generator=generator) < 0.5:  # flip, negating normal x
            x, y = x.flip(-1), {t: v.flip(-1) for t, v in y.items()}
            y["normal"] = torch.cat([-y["normal"][:, :1], y["normal"][:, 1:]], 1)
        loss = losses(model(x), y, sparse_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} {elapsed:.0f}s", file=sys.stderr)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--train", type=int, default=2000, help="training scenes")
    parser.add_argument("--val", type=int, default=300, help="held-out scenes (val split)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sparse-loss",
        choices=("l1", "bce"),
        default="l1",
        help="loss of the keypoint and edge heads: l1 (the paper's) or binary cross-entropy",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--out", default=None, help="markdown file for the results")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    size = (args.size, args.size)
    t0 = time.perf_counter()
    train_images, train_targets = load(ScenesDataset(args.train, size=size, seed=args.seed))
    val_images, val_targets = load(ScenesDataset(args.val, size=size, seed=args.seed, split="val"))
    render_seconds = time.perf_counter() - t0

    trivial = metrics(trivial_predictor(train_targets, args.val), val_targets)
    model = SmallDenseNet()
    steps = args.steps
    train_seconds = train(
        model, train_images, train_targets, steps, args.batch, args.seed, args.sparse_loss
    )
    learned = metrics(predict(model, val_images, args.sparse_loss), val_targets)
    perfect = metrics(val_targets, val_targets)

    parameters = sum(p.numel() for p in model.parameters())
    result = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "setup": {
            "train_scenes": args.train,
            "val_scenes": args.val,
            "size": list(size),
            "batch": args.batch,
            "steps": steps,
            "epochs": round(steps * args.batch / args.train, 1),
            "train_seconds": round(train_seconds, 1),
            "render_seconds": round(render_seconds, 1),
            "parameters": parameters,
            "torch_threads": torch.get_num_threads(),
            "sparse_loss": args.sparse_loss,
        },
        "trivial": trivial,
        "small_dense_net": learned,
        "perfect": perfect,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(markdown(result))
        print(f"wrote {args.out}")


def markdown(result: dict) -> str:
    setup = result["setup"]
    lines = [
        "# Synthetic scenes: difficulty",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{setup['train_scenes']} training scenes and {setup['val_scenes']} held-out scenes "
        f"(val split) at {setup['size'][0]}x{setup['size'][1]}; "
        f"a {setup['parameters']:,}-parameter "
        f"dense conv net trained for {setup['steps']} steps of batch {setup['batch']} "
        f"({setup['epochs']} epochs, {setup['train_seconds']} s, {setup['torch_threads']} torch "
        "threads, on a machine shared with other jobs). Losses: cross-entropy (seg), L1 (depth), "
        "1 - cos (normal), "
        + ("L1" if setup["sparse_loss"] == "l1" else "binary cross-entropy on logits")
        + " (keypoint, edge), summed.",
        "",
        "| metric | trivial predictor | small dense net | perfect |",
        "|---|---|---|---|",
    ]
    for name in result["trivial"]:
        values = [result[k][name] for k in ("trivial", "small_dense_net", "perfect")]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
