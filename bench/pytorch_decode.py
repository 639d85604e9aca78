#!/usr/bin/python3
"""PyTorch eager baseline for batch-1 byte-by-byte generation (SPEC §6: `small`, CPU, float32).

What a PyTorch user would write on top of the reference model of tests/golden/retbyte_torch.py
(random init, torch.no_grad(), torch.set_num_threads(--threads)). Two modes:

  recurrent (default)  the algorithm retbyte uses. At the start of patch k one global RetNet step
                       (input: the global embedding of patch k-1, the pad vector at k = 0; RoPE at
                       patch position k; per layer and head the recurrent state
                       S <- gamma S + k^T v, o = q S), then the local Transformer one byte at a
                       time with a per-patch key/value cache (at most P positions), each byte
                       sampled from softmax(logits) (temperature 1). Eager, small tensor ops.
                       The --context bytes are ingested first with the same steps (not timed).
  naive                what MEGABYTE-pytorch's generate() does: for every new byte, re-run the
                       whole parallel forward over the full sequence so far (padded up to a
                       multiple of P) and sample from the logits of the next position.

    /usr/bin/python3 bench/pytorch_decode.py [--mode recurrent|naive] [--context 1024] [--n N]
                                             [--threads 2] [--check]

--check: for a short random byte sequence (--check-len, default 96), verify that the step-wise
decoder's teacher-forced logits (and per-patch global outputs) equal the parallel forward's
(max |diff| / max |ref| below 1e-4), also after ingesting a prefix that ends inside a patch;
prints the max relative error.

Note (Debian torch 1.13 + openblas-pthread, 2 cores): with --threads 2, torch's OpenMP threads and
OpenBLAS's own threads oversubscribe the cores; the naive mode's GEMMs then run ~2.5x slower than
with OPENBLAS_NUM_THREADS=1 (or --threads 1). The recurrent mode is not affected. Neither is set here.

Prints a table, then as its LAST line one JSON object:
    {"mode": ..., "context": ..., "bytes_per_s": ..., "threads": ...}
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))

from retbyte_torch import CONFIGS, RMS_EPS, RetByte, count_params, retention_gammas, rope  # noqa: E402


# --------------------------------------------------------------------------------------------
# Step-wise (recurrent) decoder: bench-side helpers around the reference model's weights
# --------------------------------------------------------------------------------------------

class StepDecoder:
    """Batch-1 recurrent decoder for a retention-global RetByte model.

    Usage: `logits = dec.next_logits()` gives the logits [256] of byte t = dec.t given all bytes
    pushed so far; `dec.push(b)` appends byte t. `dec.ingest(bytes)` pushes a prompt, running only
    the steps the state needs (global steps for every patch; local steps only for a trailing
    partial patch).
    """

    def __init__(self, model):
        assert model.kind == "retention", "the step decoder implements the retention global"
        self.m = model
        self.P, self.D_E, self.D_G, self.D_L = model.P, model.D_E, model.D_G, model.D_L
        self.H_G, self.H_L = model.H_G, model.H_L
        self.d_k, self.d_v = self.D_G // self.H_G, 2 * self.D_G // self.H_G
        self.hd_L = self.D_L // self.H_L
        self.gam = retention_gammas(self.H_G, dtype=torch.float32)[:, None, None]  # [H, 1, 1]
        self.reset()

    def reset(self):
        self.t = 0  # bytes pushed
        # Recurrent retention state per global layer: [H, d_k, d_v].
        self.S = [torch.zeros(self.H_G, self.d_k, self.d_v) for _ in range(self.m.L_G)]
        self.patch = []  # bytes of the current (incomplete) patch
        self.prev_patch = None  # bytes of the last complete patch (global input of the next one)
        self.g2l = None  # [P, D_L]: W_GL · g_out pieces of the current patch
        self.kv = None  # local KV cache per layer: [k [H_L, p, hd], v [H_L, p, hd]]
        self.p_done = 0  # local positions of the current patch already in the cache

    # ---- global: one RetNet step per patch ---------------------------------------------------

    def global_step(self):
        """Global step for patch k = t / P; fills self.g2l and resets the local cache."""
        m, k = self.m, self.t // self.P
        if k == 0:
            x = m.w("global.pad")
        else:
            x = m.w("global.embed")[torch.tensor(self.prev_patch)].reshape(self.D_G)
        pos = torch.tensor([k])
        H, d_k, d_v = self.H_G, self.d_k, self.d_v
        for i in range(m.L_G):
            g = f"global.layers.{i}"
            h = m._ln(x, g + ".ln1")
            q = F.linear(h, m.w(g + ".msr.wq")).view(H, 1, d_k)
            kk = F.linear(h, m.w(g + ".msr.wk")).view(H, 1, d_k)
            v = F.linear(h, m.w(g + ".msr.wv")).view(H, 1, d_v)
            gate = F.linear(h, m.w(g + ".msr.wg"))
            q = rope(q, pos)
            kk = rope(kk, pos) * d_k ** -0.5
            S = self.gam * self.S[i] + kk.transpose(1, 2) @ v  # S = gamma S + k^T v
            self.S[i] = S
            o = q @ S  # [H, 1, d_v]
            o = o * torch.rsqrt(o.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)
            x = x + F.linear(F.silu(gate) * o.reshape(2 * self.D_G), m.w(g + ".msr.wo"))
            x = x + m._mlp(m._ln(x, g + ".ln2"), g + ".ffn")
        g_out = m._ln(x, "global.ln")
        self.g_out = g_out  # kept for --check
        self.g2l = F.linear(g_out.view(self.P, self.D_E), m.w("g2l.weight"))  # [P, D_L]
        self.kv = [[None, None] for _ in range(m.L_L)]
        self.p_done = 0

    # ---- local: one Transformer step per byte, KV cache over the patch -----------------------

    def local_step(self):
        """Local step for position p = t % P; returns logits [256]."""
        m, p = self.m, self.t % self.P
        assert p == self.p_done
        prev = 256 if p == 0 else self.patch[-1]
        h = self.g2l[p] + m.w("local.embed")[prev] + m.w("local.pos")[p]  # [D_L]
        H, hd, D = self.H_L, self.hd_L, self.D_L
        for i in range(m.L_L):
            l = f"local.layers.{i}"
            a = m._ln(h, l + ".ln1")
            qkv = F.linear(a, m.w(l + ".attn.wqkv"), m.w(l + ".attn.bqkv"))
            q, k, v = qkv.view(3, H, 1, hd).unbind(0)  # each [H, 1, hd]
            cache = self.kv[i]
            cache[0] = k if cache[0] is None else torch.cat([cache[0], k], dim=1)  # [H, p+1, hd]
            cache[1] = v if cache[1] is None else torch.cat([cache[1], v], dim=1)
            att = torch.softmax((q @ cache[0].transpose(1, 2)) / math.sqrt(hd), dim=-1)  # [H, 1, p+1]
            o = (att @ cache[1]).reshape(D)
            h = h + F.linear(o, m.w(l + ".attn.wo"), m.w(l + ".attn.bo"))
            h = h + m._mlp(m._ln(h, l + ".ln2"), l + ".mlp")
        h = m._ln(h, "local.ln")
        self.p_done = p + 1
        return F.linear(h, m.w("head.weight"))  # [256]

    # ---- driver ------------------------------------------------------------------------------

    def next_logits(self):
        if self.g2l is None:  # first byte of a patch: global step first
            self.global_step()
        return self.local_step()

    def push(self, b):
        self.patch.append(int(b))
        self.t += 1
        if self.t % self.P == 0:
            self.prev_patch, self.patch = self.patch, []
            self.g2l = None  # next byte starts a new patch: global step first

    def ingest(self, data):
        """Push a prompt; local steps only for bytes of a trailing partial patch."""
        n = len(data)
        full_end = (n // self.P) * self.P
        for t, b in enumerate(data):
            if self.t % self.P == 0:
                self.global_step()
            if t >= full_end:
                self.local_step()
            self.push(b)


def sample(logits, gen):
    probs = torch.softmax(logits, dim=-1)  # temperature 1
    return int(torch.multinomial(probs, 1, generator=gen))


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------

def run_check(model, n, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    P = model.P
    n = max(P, (n // P) * P)
    x = torch.randint(0, 256, (n,), generator=gen, dtype=torch.int64)
    ref = model(x[None])[0]  # parallel forward [n, 256]
    scale = ref.abs().max().item()

    dec = StepDecoder(model)
    out, gouts = [], []
    for b in x.tolist():  # teacher-forced
        out.append(dec.next_logits())
        if dec.t % P == 0:
            gouts.append(dec.g_out)
        dec.push(b)
    err_tf = (torch.stack(out) - ref).abs().max().item() / scale
    # The global output alone too (its share of the logits is small at this init).
    g_ref = model.global_forward(x[None])[0]  # [n/P, D_G]
    err_g = (torch.stack(gouts) - g_ref).abs().max().item() / g_ref.abs().max().item()

    # Ingest a prefix that ends inside a patch, then continue teacher-forced.
    cut = n - P - 3
    dec2 = StepDecoder(model)
    dec2.ingest(x[:cut].tolist())
    out2 = []
    for b in x[cut:].tolist():
        out2.append(dec2.next_logits())
        dec2.push(b)
    err_in = (torch.stack(out2) - ref[cut:]).abs().max().item() / scale

    err = max(err_tf, err_in, err_g)
    ok = err < 1e-4
    print(f"check: {n} random bytes, step-wise decoder vs parallel forward (max|diff| / max|ref|, "
          f"max|ref| = {scale:.4g})")
    print(f"  teacher-forced from byte 0:            max rel err {err_tf:.3e}")
    print(f"  global output per patch (g_out):       max rel err {err_g:.3e}")
    print(f"  after ingesting {cut} bytes (mid-patch): max rel err {err_in:.3e}")
    print(f"  max relative error {err:.3e}  -> {'OK' if ok else 'FAIL'} (tolerance 1e-4)")
    return ok, err


def run_recurrent(model, context, n, seed):
    gen = torch.Generator().manual_seed(seed + 2)
    ctx = torch.randint(0, 256, (context,), generator=gen, dtype=torch.int64).tolist()
    dec = StepDecoder(model)
    t0 = time.perf_counter()
    dec.ingest(ctx)
    t_ingest = time.perf_counter() - t0
    out = []
    t0 = time.perf_counter()
    for _ in range(n):
        b = sample(dec.next_logits(), gen)
        dec.push(b)
        out.append(b)
    dt = time.perf_counter() - t0
    return dt, t_ingest, out


def run_naive(model, context, n, seed):
    gen = torch.Generator().manual_seed(seed + 2)
    P = model.P
    seq = torch.randint(0, 256, (context,), generator=gen, dtype=torch.int64)
    warm = ((context + P) // P) * P
    model(torch.cat([seq, torch.zeros(warm - context, dtype=torch.int64)])[None])  # untimed warm-up
    out = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = seq.numel()  # position of the byte to generate
        padded = ((t + 1 + P - 1) // P) * P
        x = torch.cat([seq, torch.zeros(padded - t, dtype=torch.int64)])  # causal: pad is unseen
        logits = model(x[None])[0, t]
        b = sample(logits, gen)
        seq = torch.cat([seq, torch.tensor([b])])
        out.append(b)
    dt = time.perf_counter() - t0
    return dt, None, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="recurrent", choices=["recurrent", "naive"])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS), help="named config (default small)")
    ap.add_argument("--context", type=int, default=1024, help="context bytes before generating (default 1024)")
    ap.add_argument("--n", type=int, default=None, help="bytes to generate (default 512 recurrent, 16 naive)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="verify step-wise logits against the parallel forward")
    ap.add_argument("--check-len", type=int, default=96, help="bytes for --check (default 96)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dict(CONFIGS[args.config])
    cfg["global"] = "retention"
    model = RetByte(cfg, retention_form="parallel").float().eval()

    with torch.no_grad():
        if args.check:
            ok, err = run_check(model, args.check_len, args.seed)
            print(json.dumps({"check": "ok" if ok else "fail", "max_rel_err": err, "threads": args.threads}))
            sys.exit(0 if ok else 1)
        n = args.n if args.n is not None else (512 if args.mode == "recurrent" else 16)
        if args.mode == "recurrent":
            dt, t_ingest, out = run_recurrent(model, args.context, n, args.seed)
        else:
            dt, t_ingest, out = run_naive(model, args.context, n, args.seed)

    bps = n / dt
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(f"PyTorch {torch.__version__} eager, float32, threads={args.threads}, config={args.config} "
          f"({count_params(cfg) / 1e6:.2f}M params), batch 1, temperature 1")
    print(f"{'mode':<11}{'context':>9}{'bytes':>7}{'seconds':>10}{'ms/byte':>10}{'bytes/s':>10}{'ingest s':>10}")
    ing = f"{t_ingest:>10.3f}" if t_ingest is not None else f"{'-':>10}"
    print(f"{args.mode:<11}{args.context:>9}{n:>7}{dt:>10.3f}{1000 * dt / n:>10.3f}{bps:>10.1f}{ing}")
    print(f"peak RSS {peak_rss_mib:.0f} MiB; first generated bytes: {bytes(out[:16]).hex()} "
          f"(same --seed/--context: both modes should agree)")
    print(json.dumps({"mode": args.mode, "context": args.context, "bytes_per_s": round(bps, 2),
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
