"""PyTorch on the same shapes as cuda_bench (H_q=32, H_kv=8, D=128, bf16), timed the same way
(CUDA events, warm-up, median): SDPA dense decode at 32K, 128K and 512K, torch.gather + SDPA over
2048 keys per KV head, exact scores + torch.topk at 32K, 128K and 512K. Usage: python3 torch_bench.py [batch]
batch: SDPA dense decode of cuda_bench batch's 64 sequences of 4K-128K keys (the same lengths),
one call per sequence (SDPA takes no page table or ragged batch)."""
import sys

import torch
import torch.nn.functional as F

HQ, HKV, D, TOP = 32, 8, 128, 2048
dev = "cuda"


def median_us(fn, reps=200, warm=20):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    ev[0].record()
    for r in range(reps):
        fn()
        ev[r + 1].record()
    torch.cuda.synchronize()
    t = sorted(ev[r].elapsed_time(ev[r + 1]) * 1e3 for r in range(reps))
    return t[len(t) // 2]


def main():
    torch.manual_seed(0)
    n_max = 512 * 1024
    k = torch.randn(1, HKV, n_max, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, HKV, n_max, D, device=dev, dtype=torch.bfloat16)
    q = torch.randn(1, HQ, 1, D, device=dev, dtype=torch.bfloat16)
    for n in (32 * 1024, 128 * 1024, 512 * 1024):
        kn, vn = k[:, :, :n], v[:, :, :n]
        us = median_us(lambda: F.scaled_dot_product_attention(q, kn, vn, enable_gqa=True), reps=50)
        print(f"torch SDPA dense decode ({n // 1024}K): {us:.1f} us")
    # The engines' row-major cache [tokens][H_kv][D] (cuda_bench's), viewed as SDPA's [1, H_kv, n, D].
    kt = k[0].transpose(0, 1).contiguous()
    vt = v[0].transpose(0, 1).contiguous()
    for n in (128 * 1024, 512 * 1024):
        kn, vn = kt[:n].transpose(0, 1).unsqueeze(0), vt[:n].transpose(0, 1).unsqueeze(0)
        us = median_us(lambda: F.scaled_dot_product_attention(q, kn, vn, enable_gqa=True), reps=50)
        print(f"torch SDPA dense decode, row-major cache ({n // 1024}K): {us:.1f} us")
    del kt, vt
    # What one tiny kernel costs a call on this host, timed as above (an event after each).
    x = torch.zeros(1, device=dev)
    print(f"torch one-element add_, per call: {median_us(lambda: x.add_(1)):.2f} us")
    n = 128 * 1024
    kn, vn = k[:, :, :n], v[:, :, :n]
    sets = [torch.sort(torch.randperm(n, device=dev)[:TOP])[0] for _ in range(16 * HKV)]
    idx = [torch.stack(sets[i * HKV:(i + 1) * HKV]).view(1, HKV, TOP, 1).expand(1, HKV, TOP, D) for i in range(16)]
    state = {"r": 0}

    def gather_sdpa():
        ix = idx[state["r"] % 16]
        state["r"] += 1
        kg = torch.gather(kn, 2, ix)
        vg = torch.gather(vn, 2, ix)
        return F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True)

    print(f"torch gather + SDPA (2048 keys): {median_us(gather_sdpa):.1f} us")

    for n in (32 * 1024, 128 * 1024, 512 * 1024):
        kn = k[:, :, :n]

        def exact_topk():
            s = torch.matmul(q.view(1, HKV, HQ // HKV, D), kn.transpose(-1, -2)) * D ** -0.5  # [1, HKV, G, n]
            p = torch.softmax(s.float(), dim=-1).mean(dim=2)
            return torch.topk(p, TOP, dim=-1)

        print(f"torch exact scores + topk ({n // 1024}K): {median_us(exact_topk, reps=50):.1f} us")


def batch():
    B, P = 64, 16
    lens = [(4096 + b * (128 * 1024 - 4096) // (B - 1)) // P * P for b in range(B)]
    total = sum(lens)
    k = torch.randn(1, HKV, total, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, HKV, total, D, device=dev, dtype=torch.bfloat16)
    q = torch.randn(B, 1, HQ, 1, D, device=dev, dtype=torch.bfloat16)
    views, at = [], 0
    for n in lens:
        views.append((k[:, :, at:at + n], v[:, :, at:at + n]))
        at += n

    def loop():
        for b, (kb, vb) in enumerate(views):
            F.scaled_dot_product_attention(q[b], kb, vb, enable_gqa=True)

    print(f"torch SDPA dense decode, batch of {B} sequences of {lens[0]}-{lens[-1]} keys ({total} in all), "
          f"one call per sequence: {median_us(loop, reps=20, warm=3):.1f} us")


if __name__ == "__main__":
    batch() if sys.argv[1:] == ["batch"] else main()
