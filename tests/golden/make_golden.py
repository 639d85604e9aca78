#!/usr/bin/python3
"""Generate the golden files the C++ tests compare against.

    /usr/bin/python3 tests/golden/make_golden.py        # (Debian python: has torch + numpy)

Writes, next to this script:
    tiny_retention.safetensors   "global": "retention"
    tiny_attention.safetensors   "global": "attention"

Each file holds every parameter under its SPEC §4 name (F32), `input` (U8 [B, T]),
`logits` (F32 [B, T, 256]) and `loss` (F32 [1], mean cross-entropy in nats), and
`__metadata__.config` = the model config as a JSON string. The model is the `tiny` config
with T = 64, B = 2 so the files stay small. Logits and loss are computed in float64 from the
float32-rounded weights, then stored as float32.

Weight init (torch.manual_seed(1234) immediately before drawing, one torch.randn per tensor in
SPEC table order, all drawn in float32 — the stored values are exactly what the float64 model
uses):
    LayerNorm weight            1 + 0.1 * randn
    LayerNorm bias              0.1 * randn
    linear biases (b*, bqkv)    0.1 * randn
    global.embed, global.pad,
    local.embed, local.pos      0.5 * randn
    matrices [out, in]          randn * 1.5 / sqrt(in)

Before writing, the script checks itself (any failure raises):
  * recurrent, chunkwise and parallel retention agree (<= 1e-10, float64), standalone with and
    without an initial state, and inside the full model;
  * parameter shapes equal the SPEC §4 table ([out, in] layout), the local attention matches
    torch.nn.MultiheadAttention loaded with the same packed qkv weights, and the FFN matches
    nn.Linear -> nn.GELU -> nn.Linear;
  * causality: changing byte t never changes the logits of bytes 0..t;
  * the written file reads back identically and reproduces the stored logits.
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import safetensors_lite  # noqa: E402
from retbyte_torch import (  # noqa: E402
    RetByte,
    retention_chunkwise,
    retention_gammas,
    retention_parallel,
    retention_recurrent,
)

SEED_WEIGHTS = 1234
SEED_INPUT = 4321
MAX_FILE_BYTES = 1_200_000
TOL = 1e-10


def golden_config(kind):
    # Key order as in SPEC §1 ("P", "D_E", ..., "global").
    return {"P": 4, "D_E": 16, "L_G": 2, "H_G": 2, "D_L": 64, "L_L": 2, "H_L": 2,
            "T": 64, "B": 2, "global": kind}


def spec_shapes(cfg):
    """The SPEC §4 table written out independently of retbyte_torch.param_shapes (layout check)."""
    P, D_E, D_L = cfg["P"], cfg["D_E"], cfg["D_L"]
    D_G = P * D_E
    s = {"global.embed": (256, D_E), "global.pad": (D_G,),
         "global.ln.weight": (D_G,), "global.ln.bias": (D_G,),
         "g2l.weight": (D_L, D_E), "local.embed": (257, D_L), "local.pos": (P, D_L),
         "local.ln.weight": (D_L,), "local.ln.bias": (D_L,), "head.weight": (256, D_L)}
    for i in range(cfg["L_G"]):
        g = f"global.layers.{i}."
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
            s[g + n] = (D_G,)
        if cfg["global"] == "retention":
            s[g + "msr.wq"] = s[g + "msr.wk"] = (D_G, D_G)
            s[g + "msr.wv"] = s[g + "msr.wg"] = (2 * D_G, D_G)
            s[g + "msr.wo"] = (D_G, 2 * D_G)
        else:
            s[g + "attn.wqkv"], s[g + "attn.bqkv"] = (3 * D_G, D_G), (3 * D_G,)
            s[g + "attn.wo"], s[g + "attn.bo"] = (D_G, D_G), (D_G,)
        s[g + "ffn.w1"], s[g + "ffn.b1"] = (2 * D_G, D_G), (2 * D_G,)
        s[g + "ffn.w2"], s[g + "ffn.b2"] = (D_G, 2 * D_G), (D_G,)
    for i in range(cfg["L_L"]):
        l = f"local.layers.{i}."
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
            s[l + n] = (D_L,)
        s[l + "attn.wqkv"], s[l + "attn.bqkv"] = (3 * D_L, D_L), (3 * D_L,)
        s[l + "attn.wo"], s[l + "attn.bo"] = (D_L, D_L), (D_L,)
        s[l + "mlp.w1"], s[l + "mlp.b1"] = (4 * D_L, D_L), (4 * D_L,)
        s[l + "mlp.w2"], s[l + "mlp.b2"] = (D_L, 4 * D_L), (D_L,)
    return s


@torch.no_grad()
def golden_init(model):
    """Non-trivial float32 weights (see module docstring)."""
    torch.manual_seed(SEED_WEIGHTS)
    for name, p in model.named_tensors().items():
        r = torch.randn(p.shape, dtype=torch.float32)
        if name.endswith(("ln1.weight", "ln2.weight", "ln.weight")):
            v = 1.0 + 0.1 * r
        elif name.endswith(("ln1.bias", "ln2.bias", "ln.bias")):
            v = 0.1 * r
        elif name in ("global.embed", "global.pad", "local.embed", "local.pos"):
            v = 0.5 * r
        elif p.dim() == 1:  # linear biases: ffn.b1/b2, mlp.b1/b2, attn.bqkv/bo
            v = 0.1 * r
        else:  # [out, in] matrices
            v = r * (1.5 / math.sqrt(p.shape[1]))
        p.copy_(v.to(torch.float32))


def golden_input(cfg):
    """[B, T] uint8: row 0 ASCII text; row 1 edge bytes (0x00, 0xFF, ...) then random bytes."""
    B, T = cfg["B"], cfg["T"]
    assert B == 2
    text = b"retbyte golden: The quick brown fox jumps over the lazy dog. 0123456789\n"
    row0 = list(text[:T].ljust(T, b" "))
    g = torch.Generator().manual_seed(SEED_INPUT)
    head = list(b"\x00\xffRB\x01\x7f\x80\n\t zZ~\x00\xfe\x01")  # 16 bytes
    rnd = torch.randint(0, 256, (T - len(head),), generator=g, dtype=torch.int64).tolist()
    row1 = head + rnd
    return torch.tensor([row0, row1], dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------

def check_retention_forms():
    """Parallel vs recurrent vs chunkwise on random float64 data, with and without S0."""
    g = torch.Generator().manual_seed(7)
    B, H, N, d_k, d_v = 2, 3, 37, 8, 16
    q = torch.randn(B, H, N, d_k, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, N, d_k, generator=g, dtype=torch.float64) * d_k ** -0.5
    v = torch.randn(B, H, N, d_v, generator=g, dtype=torch.float64)
    S0 = torch.randn(B, H, d_k, d_v, generator=g, dtype=torch.float64)
    gam = retention_gammas(H)
    for s0 in (None, S0):
        o_r, s_r = retention_recurrent(q, k, v, gam, S0=s0)
        o_p, s_p = retention_parallel(q, k, v, gam, S0=s0, return_state=True)
        o_c, s_c = retention_chunkwise(q, k, v, gam, chunk=8, S0=s0)  # 37 = 4*8 + 5
        for name, o, s in (("parallel", o_p, s_p), ("chunkwise", o_c, s_c)):
            do, ds = (o - o_r).abs().max().item(), (s - s_r).abs().max().item()
            assert do < TOL and ds < TOL, f"{name} vs recurrent (S0={'yes' if s0 is not None else 'no'}): {do:.3g} {ds:.3g}"
    # Splitting a sequence in two and carrying the state equals one pass.
    o1, s1 = retention_recurrent(q[:, :, :20], k[:, :, :20], v[:, :, :20], gam)
    o2, s2 = retention_parallel(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], gam, S0=s1, return_state=True)
    o_full, s_full = retention_recurrent(q, k, v, gam)
    assert (torch.cat([o1, o2], 2) - o_full).abs().max() < TOL and (s2 - s_full).abs().max() < TOL
    print("  retention: parallel == recurrent == chunkwise (float64, with/without S0)")


def check_model_forms(model, x, logits_parallel):
    """The full model in recurrent and chunkwise retention form gives the same logits."""
    for form in ("recurrent", "chunkwise"):
        model.retention_form = form
        model.chunk = 5  # not a divisor of K = 16: exercises a short last chunk
        d = (model(x) - logits_parallel).abs().max().item()
        assert d < TOL, f"model logits {form} vs parallel: {d:.3g}"
        print(f"  model logits, {form} vs parallel retention: max |diff| = {d:.3g}")
    model.retention_form = "parallel"


def check_layout(model, cfg):
    """Shapes equal the SPEC table; packed qkv and FFN agree with torch.nn modules."""
    want = spec_shapes(cfg)
    got = {n: tuple(t.shape) for n, t in model.named_tensors().items()}
    assert got == want, f"parameter table mismatch: {set(got.items()) ^ set(want.items())}"

    dt = torch.float64
    D_L, H_L, P = cfg["D_L"], cfg["H_L"], cfg["P"]
    h = torch.randn(3, P, D_L, dtype=dt, generator=torch.Generator().manual_seed(11))
    # Local attention vs nn.MultiheadAttention (its in_proj_weight is [3E, E], rows q; k; v).
    mha = nn.MultiheadAttention(D_L, H_L, bias=True, batch_first=True).to(dt)
    with torch.no_grad():
        mha.in_proj_weight.copy_(model.w("local.layers.0.attn.wqkv"))
        mha.in_proj_bias.copy_(model.w("local.layers.0.attn.bqkv"))
        mha.out_proj.weight.copy_(model.w("local.layers.0.attn.wo"))
        mha.out_proj.bias.copy_(model.w("local.layers.0.attn.bo"))
    causal = torch.ones(P, P, dtype=torch.bool).triu(1)  # True = masked
    ref, _ = mha(h, h, h, attn_mask=causal, need_weights=False)
    ours = model._attn(h, "local.layers.0.attn", H_L, use_rope=False)
    assert (ref - ours).abs().max() < 1e-12, "local attention != nn.MultiheadAttention"
    # FFN vs nn.Linear -> nn.GELU() -> nn.Linear.
    D_G = cfg["P"] * cfg["D_E"]
    l1, l2 = nn.Linear(D_G, 2 * D_G).to(dt), nn.Linear(2 * D_G, D_G).to(dt)
    with torch.no_grad():
        l1.weight.copy_(model.w("global.layers.0.ffn.w1")); l1.bias.copy_(model.w("global.layers.0.ffn.b1"))
        l2.weight.copy_(model.w("global.layers.0.ffn.w2")); l2.bias.copy_(model.w("global.layers.0.ffn.b2"))
    xg = torch.randn(5, D_G, dtype=dt)
    ref = l2(nn.GELU()(l1(xg)))
    assert (ref - model._mlp(xg, "global.layers.0.ffn")).abs().max() < 1e-12, "FFN != nn.Linear layout"
    print("  layout: SPEC §4 shapes; local attention == nn.MultiheadAttention; FFN == nn.Linear/GELU")


def check_causal(model, x, logits):
    """Changing byte t must leave logits[:, :t+1] (predictions of bytes 0..t) unchanged."""
    T = x.shape[1]
    for t in (0, 1, 3, 4, 17, T // 2, T - 5, T - 1):
        x2 = x.clone()
        x2[:, t] = (x2[:, t].long() + 101) % 256
        l2 = model(x2)
        d_before = (l2[:, : t + 1] - logits[:, : t + 1]).abs().max().item()
        assert d_before < 1e-12, f"logits up to byte {t} changed when byte {t} changed ({d_before:.3g})"
        if t + 1 < T:
            assert (l2[:, t + 1 :] - logits[:, t + 1 :]).abs().max().item() > 0, "later logits unaffected?"
    print("  causality: logits of bytes <= t independent of byte t")


# --------------------------------------------------------------------------------------------

def make(kind):
    cfg = golden_config(kind)
    print(f"[{kind}]")
    model = RetByte(cfg)
    golden_init(model)
    weights32 = {n: t.detach().clone() for n, t in model.named_tensors().items()}
    x = golden_input(cfg)

    # Float32 run, for information only.
    with torch.no_grad():
        logits32 = model(x)

    model = model.double()
    with torch.no_grad():
        logits = model(x)
        loss = model.loss(x, logits)
        check_layout(model, cfg)
        if kind == "retention":
            check_model_forms(model, x, logits)
        check_causal(model, x, logits)
    print(f"  loss = {loss.item():.6f} nats = {loss.item() / math.log(2):.4f} bpb; "
          f"logits std {logits.std().item():.3f}, max |logit| {logits.abs().max().item():.3f}")
    print(f"  max |logit| diff float32 vs float64: {(logits32.double() - logits).abs().max().item():.3g}")

    tensors = dict(weights32)
    tensors["input"] = x
    tensors["logits"] = logits.to(torch.float32)
    tensors["loss"] = loss.to(torch.float32).reshape(1)
    meta = {"config": json.dumps(cfg, separators=(",", ":"))}
    path = os.path.join(HERE, f"tiny_{kind}.safetensors")
    safetensors_lite.save_file(tensors, path, metadata=meta)

    # Read back: identical tensors, and the loaded weights reproduce the stored logits.
    back, meta_back = safetensors_lite.load_file(path)
    assert json.loads(meta_back["config"]) == cfg
    assert list(back) == list(tensors)
    for n, t in tensors.items():
        assert back[n].dtype == t.dtype and torch.equal(back[n], t), n
    m2 = RetByte(json.loads(meta_back["config"])).double()
    m2.load_named(back)
    with torch.no_grad():
        d = (m2(back["input"]).float() - back["logits"]).abs().max().item()
    assert d == 0.0, f"reloaded model logits differ by {d}"
    size = os.path.getsize(path)
    assert size < MAX_FILE_BYTES, f"{path} is {size} bytes"
    print(f"  wrote {os.path.relpath(path)} ({size} bytes, {len(weights32)} parameters)")


def main():
    check_retention_forms()
    for kind in ("retention", "attention"):
        make(kind)


if __name__ == "__main__":
    main()
