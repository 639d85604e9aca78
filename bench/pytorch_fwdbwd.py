#!/usr/bin/python3
"""PyTorch eager baseline for training throughput (SPEC §6: `small`, T=4096, B=4, CPU).

What a PyTorch user would write: the reference model of tests/golden/retbyte_torch.py in float32,
retention in the parallel form O = (Q K^T ⊙ D) V (or `--chunkwise`), plain autograd and
torch.optim.AdamW, on random bytes.

    /usr/bin/python3 bench/pytorch_fwdbwd.py [--steps 10] [--warmup 2] [--threads 2] [--chunkwise]

Measures, after `--warmup` untimed steps each:
  * fwd+bwd:        loss = model.loss(x); loss.backward()
  * train:          the same + AdamW step + zero_grad
Bytes per step = B*T. Prints a table, then as its LAST line one JSON object:
    {"bytes_per_s_fwdbwd": ..., "bytes_per_s_train": ..., "steps": ..., "threads": ...}
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))

from retbyte_torch import CONFIGS, RetByte, count_params  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS), help="named config (default small)")
    ap.add_argument("--global", dest="glob", default="retention", choices=["retention", "attention"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--chunkwise", action="store_true", help="chunkwise retention instead of parallel")
    ap.add_argument("--chunk", type=int, default=64, help="chunk size (patches) for --chunkwise")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dict(CONFIGS[args.config])
    cfg["global"] = args.glob
    B, T = cfg["B"], cfg["T"]
    form = "chunkwise" if args.chunkwise else "parallel"

    model = RetByte(cfg, retention_form=form, chunk=args.chunk).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, 256, (B, T), dtype=torch.uint8)
    bytes_per_step = B * T

    def fwdbwd():
        loss = model.loss(x)
        loss.backward()
        return loss

    def fwdbwd_only():
        loss = fwdbwd()
        model.zero_grad(set_to_none=True)
        return loss

    def train_step():
        loss = fwdbwd()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def measure(step):
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - t0)
        return times, loss.item()

    t_fb, loss_fb = measure(fwdbwd_only)
    t_tr, loss_tr = measure(train_step)

    mean_fb = sum(t_fb) / len(t_fb)
    mean_tr = sum(t_tr) / len(t_tr)
    bps_fb = bytes_per_step / mean_fb
    bps_tr = bytes_per_step / mean_tr
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB

    glob = args.glob + (f" ({form}" + (f", C={args.chunk})" if args.chunkwise else ")") if args.glob == "retention" else "")
    print(f"PyTorch {torch.__version__} eager, float32, threads={args.threads}, config={args.config} "
          f"(T={T}, B={B}, {count_params(cfg) / 1e6:.2f}M params), global={glob}")
    print(f"{'measurement':<24}{'mean s/step':>12}{'min s/step':>12}{'bytes/s':>12}{'last loss':>11}")
    print(f"{'fwd+bwd':<24}{mean_fb:>12.3f}{min(t_fb):>12.3f}{bps_fb:>12.0f}{loss_fb:>11.4f}")
    print(f"{'fwd+bwd+AdamW':<24}{mean_tr:>12.3f}{min(t_tr):>12.3f}{bps_tr:>12.0f}{loss_tr:>11.4f}")
    print(f"steps={args.steps} (+{args.warmup} warm-up each), bytes/step={bytes_per_step}, "
          f"peak RSS {peak_rss_mib:.0f} MiB")
    print(json.dumps({"bytes_per_s_fwdbwd": round(bps_fb, 1), "bytes_per_s_train": round(bps_tr, 1),
                      "steps": args.steps, "threads": args.threads}))


if __name__ == "__main__":
    main()
