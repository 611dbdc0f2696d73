"""Matplotlib figures for the HTML report, returned as PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import io
import math
from datetime import datetime


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def timeline_png(result) -> bytes | None:
    """Cumulative lift of the primary metric over time with fixed and always-valid intervals."""
    if not result.timeline:
        return None
    plt = _plt()
    arms = sorted({r["arm"] for r in result.timeline})
    fig, axes = plt.subplots(len(arms), 1, figsize=(9, 3.4 * len(arms)), squeeze=False)
    for ax, arm in zip(axes[:, 0], arms):
        rows = [r for r in result.timeline if r["arm"] == arm and r["abs_lift"] is not None
                and math.isfinite(r["abs_lift"])]
        if not rows:
            continue
        t = [datetime.fromisoformat(r["time"]) for r in rows]
        f = lambda k: [r[k] if r[k] is not None and math.isfinite(r[k]) else float("nan") for r in rows]  # noqa: E731
        ax.fill_between(t, f("seq_low"), f("seq_high"), color="#f4a261", alpha=0.35,
                        label="always-valid 95% sequence (safe to peek)")
        ax.fill_between(t, f("ci_low"), f("ci_high"), color="#2a9d8f", alpha=0.45, label="fixed-horizon 95% CI")
        ax.plot(t, f("abs_lift"), color="#264653", marker="o", ms=3, label="cumulative lift")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{arm} vs {result.experiment.control}: cumulative {rows[0]['metric']} lift (absolute)")
        ax.set_ylabel("treatment − control")
        ax.legend(loc="upper right", fontsize=8)
        fig.autofmt_xdate()
    return _png(fig)


def forest_png(result) -> bytes:
    """Relative lift with 95% CI per metric and arm (and guardrails)."""
    plt = _plt()
    rows = [(f"{m.label} [{m.arm}]", m.lift.rel_lift, m.lift.rel_ci, m.significant, m.primary) for m in result.metrics]
    rows += [(f"guardrail: {g.label} [{g.arm}]", g.rel_change, g.rel_ci, g.breached, False)
             for g in result.guardrails if g.rel_ci and math.isfinite(g.rel_ci[0])]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    for i, (label, rel, ci, flag, primary) in enumerate(reversed(rows)):
        if not math.isfinite(rel):
            continue
        color = "#e76f51" if flag and rel < 0 else "#2a9d8f" if flag else "#6c757d"
        ax.errorbar([rel * 100], [i], xerr=[[max(0, (rel - ci[0]) * 100)], [max(0, (ci[1] - rel) * 100)]],
                    fmt="D" if primary else "o", color=color, capsize=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("relative lift vs control, % (95% CI)")
    ax.set_title("Lift per metric (diamond = primary; colour = significant after correction / breached)")
    return _png(fig)


def arms_png(result) -> bytes:
    """Per-arm metrics side by side, and units vs the configured split."""
    plt = _plt()
    arms = result.arms
    names = [a.arm for a in arms]
    panels = [("units", [a.units for a in arms]), ("CTR", [a.ctr for a in arms]), ("CVR", [a.cvr for a in arms]),
              ("revenue / 1k requests", [a.revenue_per_1k_requests for a in arms]),
              ("fill rate", [a.fill_rate for a in arms]), ("ad load", [a.ad_load for a in arms])]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5))
    colors = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51"]
    for ax, (title, values) in zip(axes.flat, panels):
        vals = [v if v is not None and math.isfinite(v) else 0 for v in values]
        ax.bar(names, vals, color=colors[: len(names)])
        if title == "units":
            total = sum(vals)
            for i, a in enumerate(arms):
                ax.plot([i - 0.4, i + 0.4], [total * a.expected_share] * 2, color="red", lw=1.5,
                        label="expected by split" if i == 0 else None)
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return _png(fig)
