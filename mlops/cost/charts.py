"""Pictures for the HTML report: PNGs (matplotlib, no display needed) as base64 strings."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

from mlops.cost.estimate import CATEGORIES, Estimate  # noqa: E402


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def stacked_bars(estimates: list[Estimate]) -> str:
    """One bar per target, stacked by category (discounts drawn below zero)."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    labels = [f"{e.target}\n{e.region}" for e in estimates]
    positive = [0.0] * len(estimates)
    negative = [0.0] * len(estimates)
    colours = plt.get_cmap("tab20").colors
    for index, category in enumerate(CATEGORIES):
        values = [e.by_category().get(category, 0.0) for e in estimates]
        if not any(values):
            continue
        bottoms = [n if v < 0 else p for v, p, n in zip(values, positive, negative)]
        axes.bar(labels, values, bottom=bottoms, label=category, color=colours[index % len(colours)])
        positive = [p + max(v, 0) for p, v in zip(positive, values)]
        negative = [n + min(v, 0) for n, v in zip(negative, values)]
    for x, e in enumerate(estimates):
        axes.annotate(f"${e.total:,.0f}", (x, positive[x]), ha="center", va="bottom", fontsize=9)
    axes.set_ylabel("USD per month (list prices)")
    axes.set_title("Monthly cost by target")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(figure)


def break_even_chart(points: dict[str, list[tuple[float, float, int]]], base_vcpu: float, utilisation: float) -> str:
    """Monthly cost against node capacity (vCPU) on each target; on-prem as a step line."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name, series in points.items():
        xs = [scale * base_vcpu for scale, _, _ in series]
        ys = [total for _, total, _ in series]
        if name == "onprem":
            axes.step(xs, ys, where="post", label=f"on-prem (fleet at {utilisation:.0%} utilisation)", linewidth=2)
        else:
            axes.plot(xs, ys, label=name, marker=".")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("node capacity needed (vCPU, log scale)")
    axes.set_ylabel("USD per month (log scale)")
    axes.set_title("Where on-prem breaks even")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    return _png(figure)
