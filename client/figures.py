"""Figures the CLI draws with matplotlib (the ``plot`` extra), written to PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._scoring import Suggestion


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a ValueError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ValueError(f"plotting needs the plot extra: pip install 'centroidal[plot]' ({error})") from None
    return plt


def suggest_k_figure(suggestion: Suggestion, path: Path) -> None:
    """Inertia (with the elbow) and silhouette (with the recommended k) against k, and the
    two dispersion indices, saved to path."""
    plt = pyplot()
    ks = [entry.n_clusters for entry in suggestion.per_k]

    def series(name: str) -> list[float]:
        values = [getattr(entry.scores, name) for entry in suggestion.per_k]
        return [float("nan") if value is None else value for value in values]

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    inertia = [entry.inertia for entry in suggestion.per_k]
    axes[0].plot(ks, inertia, marker="o")
    axes[0].plot([ks[0], ks[-1]], [inertia[0], inertia[-1]], linestyle=":", color="grey")
    axes[0].axvline(suggestion.elbow_k, color="tab:orange", linestyle="--", label=f"elbow k={suggestion.elbow_k}")
    axes[0].set(xlabel="k", ylabel="inertia", title="inertia (elbow)")
    silhouette = series("silhouette")
    axes[1].plot(ks, silhouette, marker="o", color="tab:green")
    axes[1].axvline(suggestion.recommended_k, color="tab:red", linestyle="--",
                    label=f"recommended k={suggestion.recommended_k}")
    axes[1].set(xlabel="k", ylabel="mean silhouette", title="silhouette (higher is better)")
    axes[2].plot(ks, series("davies_bouldin"), marker="o", color="tab:purple", label="Davies-Bouldin (lower is better)")
    axes[2].set(xlabel="k", ylabel="Davies-Bouldin", title="dispersion indices")
    twin = axes[2].twinx()
    twin.plot(ks, series("calinski_harabasz"), marker="s", color="tab:brown", label="Calinski-Harabasz (higher is better)")
    twin.set_ylabel("Calinski-Harabasz")
    for axis in axes[:2]:
        axis.legend()
        axis.set_xticks(ks)
    axes[2].set_xticks(ks)
    handles = axes[2].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axes[2].legend(handles=handles, fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
