"""Reference PyTorch implementation of the retbyte model (SPEC.md §1), written from the spec text.

It is the oracle for the C++ implementation's golden tests and the eager-PyTorch baseline for the
benchmarks. Everything here is plain, readable PyTorch; nothing is fused or clever.

Model summary (SPEC §1):
  * MEGABYTE patching: bytes x[B, T] with T = K*P; patch k's global input is the concatenation of
    the P global byte embeddings of patch k-1 (patch 0 gets the trainable pad vector).
  * Global model: L_G pre-norm blocks, either multi-scale retention (RetNet, default) or causal
    softmax attention with RoPE (`"global": "attention"`, the MEGABYTE baseline), each followed by
    a GELU FFN (D_G -> 2 D_G -> D_G); final LayerNorm.
  * Global-to-local: each global output row (D_G wide) is cut into P pieces of D_E, piece p is
    projected by g2l (D_E -> D_L) and added to the local input at position p.
  * Local model: small pre-norm causal Transformer over the P bytes of one patch; logits [B, T, 256].

Parameters carry EXACTLY the SPEC §4 names (`global.layers.0.msr.wq`, ...), matrices stored
[out, in] like torch.nn.Linear. Python attributes cannot be called `global`, and nn.Module names
cannot contain '.', so the parameters live in one nn.ParameterDict keyed by the SPEC name with '.'
replaced by '__' (SPEC names never contain '__'). Use `named_tensors()` / `load_named()` to go
to and from {spec_name: tensor} dicts (e.g. a safetensors file).
"""

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-5  # every LayerNorm (SPEC §4)
RMS_EPS = 1e-6  # per-head RMSNorm after retention (SPEC §1)
ROPE_BASE = 10000.0

# Named configurations of SPEC §1 (the "params" column there is approximate).
CONFIGS = {
    "tiny": dict(P=4, D_E=16, L_G=2, H_G=2, D_L=64, L_L=2, H_L=2, T=1024, B=2, **{"global": "retention"}),
    "small": dict(P=8, D_E=32, L_G=4, H_G=4, D_L=128, L_L=2, H_L=4, T=4096, B=4, **{"global": "retention"}),
    "base": dict(P=8, D_E=64, L_G=8, H_G=8, D_L=256, L_L=4, H_L=4, T=8192, B=4, **{"global": "retention"}),
}


# --------------------------------------------------------------------------------------------
# Parameter table (SPEC §4)
# --------------------------------------------------------------------------------------------

def param_shapes(cfg):
    """Ordered {spec_name: shape} for a config, exactly the SPEC §4 table."""
    P, D_E, D_L = cfg["P"], cfg["D_E"], cfg["D_L"]
    D_G = P * D_E
    kind = cfg.get("global", "retention")
    s = OrderedDict()
    s["global.embed"] = (256, D_E)
    s["global.pad"] = (D_G,)
    for i in range(cfg["L_G"]):
        g = f"global.layers.{i}"
        s[f"{g}.ln1.weight"] = (D_G,)
        s[f"{g}.ln1.bias"] = (D_G,)
        if kind == "retention":
            s[f"{g}.msr.wq"] = (D_G, D_G)
            s[f"{g}.msr.wk"] = (D_G, D_G)
            s[f"{g}.msr.wv"] = (2 * D_G, D_G)
            s[f"{g}.msr.wg"] = (2 * D_G, D_G)
            s[f"{g}.msr.wo"] = (D_G, 2 * D_G)
        elif kind == "attention":
            s[f"{g}.attn.wqkv"] = (3 * D_G, D_G)
            s[f"{g}.attn.bqkv"] = (3 * D_G,)
            s[f"{g}.attn.wo"] = (D_G, D_G)
            s[f"{g}.attn.bo"] = (D_G,)
        else:
            raise ValueError(f'config "global" must be "retention" or "attention", got {kind!r}')
        s[f"{g}.ln2.weight"] = (D_G,)
        s[f"{g}.ln2.bias"] = (D_G,)
        s[f"{g}.ffn.w1"] = (2 * D_G, D_G)
        s[f"{g}.ffn.b1"] = (2 * D_G,)
        s[f"{g}.ffn.w2"] = (D_G, 2 * D_G)
        s[f"{g}.ffn.b2"] = (D_G,)
    s["global.ln.weight"] = (D_G,)
    s["global.ln.bias"] = (D_G,)
    s["g2l.weight"] = (D_L, D_E)
    s["local.embed"] = (257, D_L)
    s["local.pos"] = (P, D_L)
    for i in range(cfg["L_L"]):
        l = f"local.layers.{i}"
        s[f"{l}.ln1.weight"] = (D_L,)
        s[f"{l}.ln1.bias"] = (D_L,)
        s[f"{l}.attn.wqkv"] = (3 * D_L, D_L)
        s[f"{l}.attn.bqkv"] = (3 * D_L,)
        s[f"{l}.attn.wo"] = (D_L, D_L)
        s[f"{l}.attn.bo"] = (D_L,)
        s[f"{l}.ln2.weight"] = (D_L,)
        s[f"{l}.ln2.bias"] = (D_L,)
        s[f"{l}.mlp.w1"] = (4 * D_L, D_L)
        s[f"{l}.mlp.b1"] = (4 * D_L,)
        s[f"{l}.mlp.w2"] = (D_L, 4 * D_L)
        s[f"{l}.mlp.b2"] = (D_L,)
    s["local.ln.weight"] = (D_L,)
    s["local.ln.bias"] = (D_L,)
    s["head.weight"] = (256, D_L)
    return s


def _key(spec_name):
    return spec_name.replace(".", "__")


def _spec_name(key):
    return key.replace("__", ".")


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def rope(x, positions):
    """Rotary position embedding on the last dim of x (width d, even), interleaved pairs.

    Pair (2i, 2i+1) at position n is rotated by angle n*theta_i, theta_i = 10000^(-2i/d):
        (a, b) -> (a cos - b sin, a sin + b cos).
    x: [..., N, d] (N = sequence axis, second to last); positions: [N].
    """
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=x.dtype, device=x.device)
    theta = ROPE_BASE ** (-2.0 * i / d)  # [d/2]
    ang = positions.to(x.dtype)[:, None] * theta[None, :]  # [N, d/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]  # even / odd members of each pair
    ra = a * cos - b * sin
    rb = a * sin + b * cos
    return torch.stack((ra, rb), dim=-1).flatten(-2)  # re-interleave


def retention_gammas(H, dtype=torch.float64, device=None):
    """Decay per head: gamma_h = 1 - 2^(-5-h), h = 0..H-1."""
    h = torch.arange(H, dtype=dtype, device=device)
    return 1.0 - 2.0 ** (-5.0 - h)


def decay_matrix(gammas, N):
    """D[h, n, m] = gamma_h^(n-m) for n >= m else 0. gammas: [H] -> [H, N, N]."""
    n = torch.arange(N, device=gammas.device)
    diff = (n[:, None] - n[None, :]).to(gammas.dtype)  # [N, N]
    causal = diff >= 0
    D = gammas[:, None, None] ** diff.clamp(min=0)[None]
    return D * causal[None].to(gammas.dtype)


def retention_parallel(q, k, v, gammas, S0=None, return_state=False):
    """Parallel retention. q, k: [B, H, N, d_k] (k already scaled), v: [B, H, N, d_v], gammas [H].

    O = (Q K^T ⊙ D) V. With an initial state S0 [B, H, d_k, d_v] the result is what the
    recurrent form gives when started from S0:
        o_n += gamma^(n+1) q_n S0,   S_N = gamma^N S0 + sum_m gamma^(N-1-m) k_m^T v_m.
    Returns (O [B, H, N, d_v], final state or None).
    """
    N = q.shape[2]
    g = gammas.to(q.dtype)
    D = decay_matrix(g, N)  # [H, N, N]
    O = (q @ k.transpose(-1, -2) * D) @ v
    if S0 is not None:
        n = torch.arange(N, dtype=q.dtype, device=q.device)
        inner = g[:, None] ** (n[None, :] + 1)  # [H, N]: gamma^(n+1)
        O = O + inner[None, :, :, None] * (q @ S0)
    S = None
    if return_state:
        n = torch.arange(N, dtype=q.dtype, device=q.device)
        w = g[:, None] ** (N - 1 - n[None, :])  # [H, N]: gamma^(N-1-m)
        S = (k * w[None, :, :, None]).transpose(-1, -2) @ v  # [B, H, d_k, d_v]
        if S0 is not None:
            S = S + (g ** N)[None, :, None, None] * S0
    return O, S


def retention_recurrent(q, k, v, gammas, S0=None):
    """Recurrent retention: S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n. Returns (O, S_N)."""
    B, H, N, d_k = q.shape
    d_v = v.shape[-1]
    g = gammas.to(q.dtype)[None, :, None, None]
    S = torch.zeros(B, H, d_k, d_v, dtype=q.dtype, device=q.device) if S0 is None else S0
    outs = []
    for n in range(N):
        kv = k[:, :, n, :, None] * v[:, :, n, None, :]  # outer product k_n^T v_n
        S = g * S + kv
        outs.append((q[:, :, n, None, :] @ S)[:, :, 0, :])
    return torch.stack(outs, dim=2), S


def retention_chunkwise(q, k, v, gammas, chunk, S0=None):
    """Chunkwise retention with chunk size C (the last chunk may be shorter).

    SPEC §1: inside a chunk the parallel form; across chunks o_j += gamma^(j+1) Q_j S_prev and
    S <- gamma^C S_prev + sum_j gamma^(C-1-j) K_j^T V_j. That is precisely `retention_parallel`
    on each chunk started from the previous chunk's state, so we reuse it.
    """
    N = q.shape[2]
    S = S0
    outs = []
    for c0 in range(0, N, chunk):
        sl = slice(c0, min(c0 + chunk, N))
        O, S = retention_parallel(q[:, :, sl], k[:, :, sl], v[:, :, sl], gammas, S0=S, return_state=True)
        outs.append(O)
    return torch.cat(outs, dim=2), S


def causal_attention(q, k, v):
    """Softmax attention, q/k/v [..., N, hd], causal, scale 1/sqrt(hd)."""
    N, hd = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    mask = torch.ones(N, N, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class RetByte(nn.Module):
    """retbyte model of SPEC §1 with SPEC §4 parameter names.

    cfg: dict with P, D_E, L_G, H_G, D_L, L_L, H_L (T, B ignored here) and "global"
         ("retention" default, or "attention").
    retention_form: "parallel" (default), "recurrent" or "chunkwise" (with `chunk`).
    """

    def __init__(self, cfg, retention_form="parallel", chunk=64):
        super().__init__()
        self.cfg = dict(cfg)
        self.cfg.setdefault("global", "retention")
        self.P, self.D_E = cfg["P"], cfg["D_E"]
        self.D_G = self.P * self.D_E
        self.D_L = cfg["D_L"]
        self.L_G, self.H_G = cfg["L_G"], cfg["H_G"]
        self.L_L, self.H_L = cfg["L_L"], cfg["H_L"]
        self.kind = self.cfg["global"]
        assert self.D_G % self.H_G == 0 and self.D_L % self.H_L == 0
        self.retention_form = retention_form
        self.chunk = chunk
        self.shapes = param_shapes(self.cfg)
        self.params = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.empty(s)) for n, s in self.shapes.items()}
        )
        self.reset_parameters()

    # ---- parameter access ------------------------------------------------------------------

    def w(self, name):
        """Parameter by its SPEC name."""
        return self.params[_key(name)]

    def named_tensors(self):
        """{spec_name: tensor} in SPEC table order (tensors share storage with the parameters)."""
        return OrderedDict((n, self.w(n)) for n in self.shapes)

    @torch.no_grad()
    def load_named(self, tensors, strict=True):
        """Copy {spec_name: tensor} into the parameters (shape-checked; dtype converted)."""
        missing = [n for n in self.shapes if n not in tensors]
        if strict and missing:
            raise KeyError(f"missing tensors: {missing}")
        for n, shape in self.shapes.items():
            if n not in tensors:
                continue
            t = tensors[n]
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{n}: shape {tuple(t.shape)}, expected {tuple(shape)}")
            self.w(n).copy_(t.to(self.w(n).dtype))

    @torch.no_grad()
    def reset_parameters(self, std=0.02):
        """A conventional default init (used by the benchmark; the golden files use their own):
        LayerNorm weight 1 / bias 0, linear biases 0, matrices N(0, std), embeddings N(0, 1)."""
        for n, p in self.named_tensors().items():
            if n.endswith(("ln1.weight", "ln2.weight", "ln.weight")):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            elif n in ("global.embed", "local.embed", "local.pos"):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, std)
        self.w("global.pad").normal_(0.0, 1.0)

    # ---- sub-blocks ------------------------------------------------------------------------

    def _ln(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.w(prefix + ".weight"), self.w(prefix + ".bias"), LN_EPS)

    def _msr(self, x, prefix):
        """Multi-scale retention, x [B, N, D_G] -> [B, N, D_G]."""
        B, N, _ = x.shape
        H = self.H_G
        d_k, d_v = self.D_G // H, 2 * self.D_G // H
        q = F.linear(x, self.w(prefix + ".wq"))  # [B, N, D_G]
        k = F.linear(x, self.w(prefix + ".wk"))
        v = F.linear(x, self.w(prefix + ".wv"))  # [B, N, 2 D_G]
        g = F.linear(x, self.w(prefix + ".wg"))
        # Heads: head h owns columns h*d_k..(h+1)*d_k-1 of Q/K and h*d_v.. of V.
        q = q.view(B, N, H, d_k).transpose(1, 2)  # [B, H, N, d_k]
        k = k.view(B, N, H, d_k).transpose(1, 2)
        v = v.view(B, N, H, d_v).transpose(1, 2)  # [B, H, N, d_v]
        pos = torch.arange(N, device=x.device)  # patch position n
        q = rope(q, pos)
        k = rope(k, pos) * d_k ** -0.5
        gam = retention_gammas(H, dtype=x.dtype, device=x.device)
        if self.retention_form == "parallel":
            o, _ = retention_parallel(q, k, v, gam)
        elif self.retention_form == "recurrent":
            o, _ = retention_recurrent(q, k, v, gam)
        elif self.retention_form == "chunkwise":
            o, _ = retention_chunkwise(q, k, v, gam, self.chunk)
        else:
            raise ValueError(self.retention_form)
        # Per-head RMSNorm over d_v, no affine.
        o = o * torch.rsqrt(o.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)
        y = o.transpose(1, 2).reshape(B, N, 2 * self.D_G)  # concat heads
        return F.linear(F.silu(g) * y, self.w(prefix + ".wo"))

    def _attn(self, x, prefix, n_heads, use_rope):
        """Causal multi-head attention with packed qkv (rows: all q, all k, all v), x [B, N, D]."""
        B, N, D = x.shape
        hd = D // n_heads
        qkv = F.linear(x, self.w(prefix + ".wqkv"), self.w(prefix + ".bqkv"))
        q, k, v = qkv.split(D, dim=-1)
        q = q.view(B, N, n_heads, hd).transpose(1, 2)  # [B, heads, N, hd]
        k = k.view(B, N, n_heads, hd).transpose(1, 2)
        v = v.view(B, N, n_heads, hd).transpose(1, 2)
        if use_rope:
            pos = torch.arange(N, device=x.device)
            q, k = rope(q, pos), rope(k, pos)
        o = causal_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        return F.linear(o, self.w(prefix + ".wo"), self.w(prefix + ".bo"))

    def _mlp(self, x, prefix, w1="w1", b1="b1", w2="w2", b2="b2"):
        h = F.gelu(F.linear(x, self.w(f"{prefix}.{w1}"), self.w(f"{prefix}.{b1}")))  # exact erf GELU
        return F.linear(h, self.w(f"{prefix}.{w2}"), self.w(f"{prefix}.{b2}"))

    # ---- forward ---------------------------------------------------------------------------

    def global_forward(self, x):
        """x: bytes [B, T] (int64) -> g_out [B, K, D_G] (after the final global LN)."""
        B, T = x.shape
        P, K = self.P, T // self.P
        assert T == K * P, "T must be a multiple of P"
        u = self.w("global.embed")[x].reshape(B, K, self.D_G)  # u_k = concat of P byte embeddings
        pad = self.w("global.pad").expand(B, 1, self.D_G)
        X = torch.cat([pad, u[:, :-1]], dim=1)  # g_in[0] = pad, g_in[k] = u_{k-1}
        for i in range(self.L_G):
            g = f"global.layers.{i}"
            if self.kind == "retention":
                X = X + self._msr(self._ln(X, g + ".ln1"), g + ".msr")
            else:
                X = X + self._attn(self._ln(X, g + ".ln1"), g + ".attn", self.H_G, use_rope=True)
            X = X + self._mlp(self._ln(X, g + ".ln2"), g + ".ffn")
        return self._ln(X, "global.ln")

    def local_forward(self, x, g_out):
        """x: bytes [B, T], g_out [B, K, D_G] -> logits [B, T, 256]."""
        B, T = x.shape
        P, K = self.P, T // self.P
        # Piece p of global row k (columns p*D_E..(p+1)*D_E-1) -> D_L via g2l (no bias).
        g2l = F.linear(g_out.view(B, K, P, self.D_E), self.w("g2l.weight"))  # [B, K, P, D_L]
        # Previous byte inside the patch; row 256 (the pad byte) at p = 0.
        xp = x.view(B, K, P)
        prev = torch.cat([torch.full_like(xp[:, :, :1], 256), xp[:, :, :-1]], dim=2)
        h = g2l + self.w("local.embed")[prev] + self.w("local.pos")  # pos broadcasts over [P, D_L]
        h = h.reshape(B * K, P, self.D_L)  # all patches as one batch
        for i in range(self.L_L):
            l = f"local.layers.{i}"
            h = h + self._attn(self._ln(h, l + ".ln1"), l + ".attn", self.H_L, use_rope=False)
            h = h + self._mlp(self._ln(h, l + ".ln2"), l + ".mlp")
        h = self._ln(h, "local.ln")
        logits = F.linear(h, self.w("head.weight"))  # [B*K, P, 256]
        return logits.view(B, T, 256)

    def forward(self, x):
        """x: bytes [B, T] (any integer dtype) -> logits [B, T, 256]."""
        x = x.long()
        return self.local_forward(x, self.global_forward(x))

    def loss(self, x, logits=None):
        """Mean cross-entropy (nats) over all B*T bytes; bits per byte = loss / ln 2."""
        x = x.long()
        if logits is None:
            logits = self(x)
        return F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1))


def count_params(cfg):
    n = 0
    for s in param_shapes(cfg).values():
        n += math.prod(s)
    return n
