import numpy as np
import sparseattn as sa

rng = np.random.default_rng(0)
k, v = (rng.standard_normal((4096, 8, 128)).astype(np.float16) for _ in range(2))
q = rng.standard_normal((1, 32, 128)).astype(np.float32)
with sa.Context() as ctx, sa.Index(ctx, num_kv_heads=8, head_dim=128, kind="page") as index:
    index.append(k)                     # the cache's keys, as it grows
    idx = index.select(q, top_k=256)    # i32 [1, 8, 4 + 64 + 256]: slots ascending, -1 padded
    out = ctx.attend(q, k, v, idx)      # f32 [1, 32, 128]: attention over those slots
