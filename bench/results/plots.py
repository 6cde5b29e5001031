"""speed.png and quality.png: small matplotlib figures (Agg, no display needed)."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

DPI = 100


def _finite(x):
    return x if x is not None and not math.isnan(x) else 0.0


def speed(rows, subtitle, path):
    """Per N: time per decode query of the read loop (dense's bytes), dense, page step, sparse."""
    sizes = sorted({r.n for r in rows})
    series = [("read loop, dense's K/V bytes", "read_loop_ms", "#bbbbbb"),
              ("dense attend", "dense_ms", "#d62728"),
              ("page select + sparse attend", "page_step_ms", "#1f77b4"),
              ("sparse attend only", "sparse_ms", "#9ecae1")]
    fig, axes = plt.subplots(1, len(sizes), figsize=(8, 3.6), sharey=True, dpi=DPI)
    axes = axes if len(sizes) > 1 else [axes]
    width = 0.8 / len(series)
    for ax, n in zip(axes, sizes):
        mine = [r for r in rows if r.n == n]
        for i, (label, attr, color) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(mine))]
            ax.bar(xs, [_finite(getattr(r, attr)) for r in mine], width, label=label, color=color)
        for j, r in enumerate(mine):
            if not math.isnan(r.speedup):
                ax.annotate(f"step {r.speedup:.1f}× faster", (j, r.dense_ms), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        ax.set_yscale("log")
        top = max(_finite(r.dense_ms) for r in mine)
        ax.set_ylim(top=top * 2.5)  # room for the annotation
        ax.set_xticks(range(len(mine)), [f"{r.threads} thread{'s' * (r.threads > 1)}" for r in mine])
        ax.set_title(f"N = {n // 1024}K keys", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].set_ylabel("ms per decode query (log)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    fig.suptitle("Decode attention, f16, H_q=32 H_kv=8 D=128\n" + subtitle, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def quality(rows, subtitle, path):
    """Per metric, a bar per kind and K."""
    ok = [r for r in rows if r["status"] == "ok"]
    kinds = list(dict.fromkeys(r["kind"] for r in ok))
    ks = sorted({int(r["k"]) for r in ok})
    metrics = [("attention mass", "mass"), ("recall@K vs exact", "recall"),
               ("output rel. error", "rel_err")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(9, 3.4), dpi=DPI)
    width = 0.8 / max(len(ks), 1)
    for ax, (title, col) in zip(axes, metrics):
        for i, k in enumerate(ks):
            vals = {r["kind"]: r[col] for r in ok if int(r["k"]) == k}
            xs = [j + (i - (len(ks) - 1) / 2) * width for j in range(len(kinds))]
            ax.bar(xs, [vals.get(kd, 0.0) for kd in kinds], width, label=f"K={k}")
        ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(ks), fontsize=8, frameon=False)
    fig.suptitle("Selection quality, tests/data (layer 3, 1024 tokens, decode, window 64)\n"
                 + subtitle, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
