"""α over the search, one panel per edge: softmax weight of each operation against epoch.

Panels are laid out as the cell's DAG: one row per intermediate node, one column per
input it can read (0 and 1 are the cell's inputs, 2+ earlier nodes). Edges the derived
genotype keeps are framed and captioned with the chosen operation, so the picture shows
both how the search moved and what it decided.
"""

from __future__ import annotations

from pathlib import Path

from ssl_bench.search.genotype import CELL_TYPES, Genotype, edge_offset


def plot_alphas(records: list[dict], path: Path, primitives: tuple[str, ...], nodes: int,
                genotype: Genotype | None = None, title: str = "") -> Path:
    """Draw the `softmax` of every record of `alpha.jsonl` against its epoch into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = [r for r in records if "softmax" in r]
    epochs = [r["epoch"] for r in records]
    cols = nodes + 1  # the last node reads 2 inputs + nodes - 1 earlier nodes
    rows = len(CELL_TYPES) * nodes
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), sharex=True, sharey=True,
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for c, kind in enumerate(CELL_TYPES):
        kept = {(node, src): op for node in range(nodes)
                for op, src in (genotype.cell(kind)[2 * node:2 * node + 2] if genotype else [])}
        for node in range(nodes):
            for src in range(cols):
                ax = axes[c * nodes + node][src]
                if src >= node + 2:
                    ax.axis("off")
                    continue
                edge = edge_offset(node) + src
                for o, op in enumerate(primitives):
                    ax.plot(epochs, [r["softmax"][kind][edge][o] for r in records], color=colors(o),
                            label=op, linewidth=1.2, marker="." if len(epochs) < 20 else None)
                caption = f"{kind} n{node + 2} ← {src}"
                if (node, src) in kept:
                    caption += f"\nkept: {kept[(node, src)]}"
                    for spine in ax.spines.values():
                        spine.set_linewidth(2.0)
                ax.set_title(caption, fontsize=7)
                ax.tick_params(labelsize=6)
                ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    axes[0][0].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0][0].get_legend_handles_labels()
    height = fig.get_size_inches()[1]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title or "softmax(α) per edge", fontsize=9)
    fig.supylabel("softmax(α)", fontsize=8)
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1 - 0.1 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
