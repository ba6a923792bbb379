"""Plain-loop probe: the pruning primitives in a user's own loop, outside our trainer.

    .venv/bin/python benchmarks/plain_loop_probe.py --cands dense gmp soft_pressure hard_none \
        hard_grad hard_cost --seeds 0 1 [--iters 752] [--out results.jsonl]

A small LeNet-style two-task model of its own (trunk 87 % of the 47k prunable weights, two MLP
heads of 3k), two-item Fashion-MNIST canvases (Debian's dataset-fashion-mnist), 752 iterations at
batch 128, Adam 1e-3, equal task weights, 90 % target. Candidates: ``dense``; ``gmp``
(``torch.nn.utils.prune.global_unstructured``, cubic schedule from 10 % to 50 % of training, every
10 iterations); ``<threshold>_<how>[_regrow]`` with threshold ``soft`` or ``hard`` and how
``pressure`` (the earlier default: ThresholdPressure), ``none`` (scheduled level, one global
order), ``grad`` (scheduled level, thresholds learned by Adam at --thr-lr) or ``cost``
(scheduled level, CostAllocation). Prints one JSON line per run: test accuracy per task (10,000
canvases of the t10k images), component sparsity, freeze iteration.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from adapmtl.data.fashion import load_part
from adapmtl.sparsity import (
    TargetSparsityController,
    ThresholdPressure,
    bake,
    overall_sparsity,
    param_groups,
    sparsify,
)
from adapmtl.sparsity.allocation import CostAllocation
from adapmtl.sparsity.level import CubicSchedule, ScheduledLevel
from adapmtl.sparsity.sparsify import thresholds

ROOT = Path("/usr/share/datasets/fashion-mnist")


def canvases(images, labels, n, rng):
    i = rng.integers(0, len(images), n)
    j = rng.integers(0, len(images), n)
    x = np.concatenate([images[i], images[j]], axis=2).astype(np.float32) / 255.0
    return (
        torch.from_numpy((x - 0.286) / 0.353).unsqueeze(1),
        torch.from_numpy(labels[i].astype(np.int64)),
        torch.from_numpy(labels[j].astype(np.int64)),
    )


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 10, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(10, 20, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(20 * 4 * 11, 40),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
                for t in ("left", "right")
            }
        )

    def forward(self, x):
        f = self.backbone(x)
        return {t: h(f) for t, h in self.heads.items()}


def prunable(model):
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def comp_sparsity(model):
    out = {}
    for name, mod in [("backbone", model.backbone)] + [(t, h) for t, h in model.heads.items()]:
        z = n = 0
        for m in mod.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                z += int((w == 0).sum())
                n += w.numel()
        out[name] = round(100 * z / n, 2)
    return out


def run(cand, seed, iters, target, thr_lr):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr_i, tr_l = load_part(ROOT, "train")
    te_i, te_l = load_part(ROOT, "test")
    X, L, R = canvases(tr_i, tr_l, 30000, rng)
    Xt, Lt, Rt = canvases(te_i, te_l, 10000, np.random.default_rng(1000))
    model = Net()
    start, end = round(0.1 * iters), round(0.5 * iters)
    level = alloc = controller = pressure = None
    if cand == "dense" or cand == "gmp":
        opt = torch.optim.Adam(model.parameters(), 1e-3)
    else:
        kind, how = cand.split("_")[:2]  # soft|hard _ pressure|none|grad|cost [_regrow]
        sparsify(model, mode=kind, init=-7.0, regrow=cand.endswith("_regrow"))
        learn = how in ("pressure", "grad")
        for th in thresholds(model).values():
            th.requires_grad_(learn)
        opt = torch.optim.Adam(
            param_groups(
                model,
                lr=1e-3,
                threshold_lr=thr_lr,
                threshold_weight_decay=0.01 if how == "pressure" else 0.0,
            )
        )
        controller = TargetSparsityController(model, target)
        if how == "pressure":
            pressure = ThresholdPressure(target, end)
        else:
            level = ScheduledLevel(model, CubicSchedule(target, start, end))
        if how == "cost":
            alloc = CostAllocation(model)
    log = []
    for it in range(iters):
        b = torch.randint(0, 30000, (128,))
        out = model(X[b])
        loss = F.cross_entropy(out["left"], L[b]) + F.cross_entropy(out["right"], R[b])
        opt.zero_grad()
        loss.backward()
        if controller is not None:
            controller.step(it)
            if pressure is not None and not controller.frozen:
                pressure.update(opt, it, controller.last_sparsity)
            if alloc is not None and not controller.frozen:
                alloc.observe()
                alloc.step()
        opt.step()
        if level is not None and not controller.frozen:
            level.step(it)
        if cand == "gmp" and start <= it <= end and (it - start) % 10 == 0:
            s = target * (1 - (1 - (it - start) / (end - start)) ** 3)
            if s > 0:
                for m, _ in prunable(model):
                    if prune.is_pruned(m):
                        prune.remove(m, "weight")
                prune.global_unstructured(
                    prunable(model), pruning_method=prune.L1Unstructured, amount=s
                )
        if it % 100 == 0 and controller is not None:
            log.append(
                (
                    it,
                    round(100 * overall_sparsity(model), 2),
                    {k: round(float(v), 3) for k, v in thresholds(model).items()},
                )
            )
    if cand == "gmp":
        for m, _ in prunable(model):
            if prune.is_pruned(m):
                prune.remove(m, "weight")
    if controller is not None:
        frozen = controller.frozen_at
        bake(model)
    else:
        frozen = None
    model.eval()
    with torch.no_grad():
        acc = {}
        for t, Y in (("left", Lt), ("right", Rt)):
            pred = torch.cat([model(Xt[k : k + 1000])[t].argmax(1) for k in range(0, 10000, 1000)])
            acc[t] = round(100 * float((pred == Y).float().mean()), 2)
    tot = sum(m.weight.numel() for m, _ in prunable(model))
    z = sum(int((m.weight == 0).sum()) for m, _ in prunable(model))
    return {
        "cand": cand,
        "seed": seed,
        "iters": iters,
        "thr_lr": thr_lr,
        "acc": acc,
        "overall": round(100 * z / tot, 2),
        "components": comp_sparsity(model),
        "frozen_at": frozen,
        "log": log,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cands", nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=752)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--thr-lr", type=float, default=1e-2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for seed in a.seeds:
        for c in a.cands:
            t0 = time.time()
            r = run(c, seed, a.iters, a.target, a.thr_lr)
            r["seconds"] = round(time.time() - t0, 1)
            line = json.dumps(r)
            print(line, flush=True)
            if a.out:
                with open(a.out, "a") as out:
                    out.write(line + "\n")
