"""floor.png and quality.png: small matplotlib figures (Agg, no display needed)."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

DPI = 100


def _finite(x):
    return x if x is not None and not math.isnan(x) else 0.0


def floor(lines, subtitle, path):
    """Left: each measurement as a share of its floor loop; middle: dense / step per N; right:
    prefill selection per kind. 1 and 2 threads side by side, goals as dashed lines."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=DPI, gridspec_kw={"width_ratios": [3, 2, 2]})
    colors = {1: "#9ecae1", 2: "#1f77b4"}

    def bars(ax, chosen, labels, goal=None, unit=""):
        width = 0.38
        for i, t in enumerate((1, 2)):
            xs = [j + (i - 0.5) * width for j in range(len(chosen))]
            vals = [_finite(ln.values.get(t, (0, 0))[1 if unit != "ms" else 0]) for ln in chosen]
            ax.bar(xs, vals, width, color=colors[t], label=f"{t} thread{'s' * (t > 1)}")
        ax.set_xticks(range(len(chosen)), labels, rotation=20, ha="right", fontsize=7)
        if goal is not None:
            ax.axhline(goal, color="#d62728", ls="--", lw=1)
        ax.grid(axis="y", alpha=0.3)

    pct = [ln for ln in lines if "%" in ln.against]
    bars(axes[0], pct, [f"{ln.what.split(' (')[0].replace('`', '')} {ln.n}" for ln in pct], 80)
    axes[0].set_title("% of a loop reading the same bytes (goal 80 %)", fontsize=9)
    steps = [ln for ln in lines if ln.what.startswith("decode step")]
    bars(axes[1], steps, [f"page step {ln.n}" for ln in steps])
    for j, ln in enumerate(steps):
        goal = ln.goal.lstrip("≥ ").rstrip("×")
        if goal:
            axes[1].plot([j - 0.45, j + 0.45], [float(goal)] * 2, color="#d62728", ls="--", lw=1)
    axes[1].set_yscale("log")
    axes[1].set_title("dense / page step (× faster; goals dashed)", fontsize=9)
    prefill = [ln for ln in lines if ln.what.startswith("prefill")]
    bars(axes[2], prefill, [ln.what.split(", ")[1].split(" (")[0].replace(" of the baseline build", " (baseline)")
                            for ln in prefill], unit="ms")
    axes[2].set_yscale("log")
    axes[2].set_title("prefill selection, 4096 q × 4096 keys (ms)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Decode step at the memory floor, f16, H_q=32 H_kv=8 D=128, caches flushed\n" + subtitle,
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
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
