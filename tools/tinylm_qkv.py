#!/usr/bin/env python3
"""Writes a tinylm-qkv style data set (q{L}.npy, k{L}.npy, v{L}.npy, tokens.npy; f16) for one
sequence of the tinylm model's dev text at any length up to the model's context (8192), so the
selectors can be measured at T = 8192 (the shipped tinylm-qkv set stops at 4096).

  /usr/bin/python3 tools/tinylm_qkv.py --model DIR/model.safetensors --text DIR/dev_text.bin \
      --out OUT [--seq 0] [--tokens 8192] [--layers 1,3,5,7]

The forward pass is the one in the model directory's README (f32, dense causal attention).
"""
import argparse, json, os, struct
import numpy as np

def load_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        buf = np.memmap(path, dtype=np.uint8, mode='r')
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        assert t['dtype'] == 'F16', (name, t['dtype'])
        a, b = t['data_offsets']
        out[name] = np.frombuffer(buf[base + a:base + b].tobytes(), dtype=np.float16).reshape(t['shape']).astype(np.float32)
    return out

def rmsnorm(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.finfo(np.float32).eps) * w

def rope(x, theta=1e5):
    T, H, D = x.shape
    inv = theta ** (-2.0 * np.arange(D // 2) / D)
    a = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(a)[:, None, :].astype(np.float32), np.sin(a)[:, None, :].astype(np.float32)
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)

def attention(q, k, v):
    T, Hq, D = q.shape
    G = Hq // k.shape[1]
    out = np.empty_like(q)
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for h in range(Hq):
        s = (q[:, h] @ k[:, h // G].T) / np.sqrt(D)
        s[mask] = -np.inf
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        out[:, h] = s @ v[:, h // G]
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--text', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--seq', type=int, default=0)
    ap.add_argument('--tokens', type=int, default=8192)
    ap.add_argument('--layers', default='1,3,5,7')
    a = ap.parse_args()
    keep = {int(x) for x in a.layers.split(',')}
    W = load_safetensors(a.model)
    text = np.fromfile(a.text, dtype=np.uint8)
    toks = text[a.seq * 8193:a.seq * 8193 + a.tokens + 1]
    T = a.tokens
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, 'tokens.npy'), toks)
    x = W['emb.weight'][toks[:T]]
    for l in range(8):
        p = 'blocks.%d.' % l
        h = rmsnorm(x, W[p + 'n1.weight'])
        q = rope((h @ W[p + 'wq.weight'].T).reshape(T, 4, 128))
        k = rope((h @ W[p + 'wk.weight'].T).reshape(T, 2, 128))
        v = (h @ W[p + 'wv.weight'].T).reshape(T, 2, 128)
        if l in keep:
            for name, t in (('q', q), ('k', k), ('v', v)):
                np.save(os.path.join(a.out, '%s%d.npy' % (name, l)), t.astype(np.float16))
        if l == max(keep):
            break
        x = x + attention(q, k, v).reshape(T, 512) @ W[p + 'wo.weight'].T
        h = rmsnorm(x, W[p + 'n2.weight'])
        g = h @ W[p + 'w1.weight'].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W[p + 'w3.weight'].T)) @ W[p + 'w2.weight'].T
    print('wrote', a.out, 'T =', T)

if __name__ == '__main__':
    main()
