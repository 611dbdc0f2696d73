"""Reports of an ``ExperimentResult``: terminal (rich), JSON, CSV and one self-contained HTML page.

The HTML page leads with the decision in plain words and its reasons, then the evidence
(plots as base64 PNGs, tables) and a short glossary, so an analyst needs no code.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math

VERDICT_STYLE = {"ship": ("#1b7f4b", "#e6f4ec"), "don't ship": ("#b3261e", "#fbe9e7"),
                 "keep running": ("#8a6100", "#fff4d6")}


def _f(x, fmt="{:.4g}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return fmt.format(x)


def _pct(x) -> str:
    return _f(x, "{:+.2%}")


def _ci(ci, pct=True) -> str:
    if not ci or ci[0] is None or not math.isfinite(ci[0]):
        return "–"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if pct else f"[{_f(ci[0])}, {_f(ci[1])}]"


def to_json(result) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str)


def to_csv(result) -> str:
    """One long table: one row per arm summary and per (metric|guardrail, arm) comparison."""
    cols = ["kind", "experiment_id", "arm", "control_arm", "metric", "units", "requests", "impressions",
            "clicks", "conversions", "revenue", "control_value", "treatment_value", "abs_lift", "abs_ci_low",
            "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value", "p_adjusted", "seq_p_value",
            "seq_p_adjusted", "significant", "cuped_variance_reduction", "breached"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    eid = result.experiment.id
    for a in result.arms:
        w.writerow({"kind": "arm", "experiment_id": eid, "arm": a.arm, "units": a.units, "requests": a.requests,
                    "impressions": a.impressions, "clicks": a.clicks, "conversions": a.conversions,
                    "revenue": a.revenue, "treatment_value": a.ctr, "metric": "ctr"})
    for m in result.metrics:
        l = m.lift
        w.writerow({"kind": "metric", "experiment_id": eid, "arm": m.arm, "control_arm": m.control_arm,
                    "metric": m.metric, "control_value": l.control, "treatment_value": l.treatment,
                    "abs_lift": l.abs_lift, "abs_ci_low": l.abs_ci[0], "abs_ci_high": l.abs_ci[1],
                    "rel_lift": l.rel_lift, "rel_ci_low": l.rel_ci[0], "rel_ci_high": l.rel_ci[1],
                    "p_value": l.p_value, "p_adjusted": m.p_adjusted, "seq_p_value": l.seq_p_value,
                    "seq_p_adjusted": m.seq_p_adjusted, "significant": m.significant,
                    "cuped_variance_reduction": l.variance_reduction})
    for g in result.guardrails:
        w.writerow({"kind": "guardrail", "experiment_id": eid, "arm": g.arm, "control_arm": result.experiment.control,
                    "metric": g.guardrail, "control_value": g.control, "treatment_value": g.treatment,
                    "rel_lift": g.rel_change, "rel_ci_low": g.rel_ci[0], "rel_ci_high": g.rel_ci[1],
                    "p_value": g.p_value, "breached": g.breached})
    return buf.getvalue()


def render_terminal(result, console=None) -> None:
    """Decision, per-arm table, lift table, guardrails and checks, with rich."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    exp = result.experiment
    d = result.decision
    color = {"ship": "green", "don't ship": "red", "keep running": "yellow"}.get(d.verdict, "white")
    console.print(Panel("\n".join([f"[bold]{d.headline}[/bold]"] + [f"• {r}" for r in d.reasons]),
                        title=f"{exp.id} ({exp.status}) — decision: {d.verdict.upper()}", border_style=color))
    total = sum(a.units for a in result.arms) or 1
    t = Table(title="Per arm: volume")
    for c in ("arm", "units (share / expected)", "requests", "impressions", "clicks", "conversions", "revenue"):
        t.add_column(c, justify="left" if c == "arm" else "right")
    for a in result.arms:
        t.add_row(a.arm, f"{a.units} ({a.units / total:.1%} / {a.expected_share:.0%})", str(a.requests),
                  str(a.impressions), str(a.clicks), str(a.conversions), _f(a.revenue, "{:.2f}"))
    console.print(t)
    t = Table(title="Per arm: rates")
    for c in ("arm", "CTR", "CVR", "rev / 1k req", "fill rate", "ad load", "p99 ms"):
        t.add_column(c, justify="left" if c == "arm" else "right")
    for a in result.arms:
        t.add_row(a.arm, _f(a.ctr, "{:.3%}"), _f(a.cvr, "{:.2%}"), _f(a.revenue_per_1k_requests, "{:.2f}"),
                  _f(a.fill_rate, "{:.1%}"), _f(a.ad_load, "{:.2f}"), _f(a.latency_p99_ms, "{:.1f}"))
    console.print(t)
    corr = "Holm" if result.options.correction == "holm" else "BH"
    t = Table(title=f"Lift vs {exp.control} (★ primary; p adjusted by {corr}; seq = always-valid)")
    for c in ("metric", "arm", "rel. lift [95% CI]", "p adj.", "seq p adj.", "CUPED", "result"):
        t.add_column(c, justify="left" if c in ("metric", "arm", "result") else "right")
    for m in result.metrics:
        l = m.lift
        t.add_row(("★ " if m.primary else "") + m.metric, m.arm, f"{_pct(l.rel_lift)} {_ci(l.rel_ci)}",
                  _f(m.p_adjusted, "{:.3g}"), _f(m.seq_p_adjusted, "{:.3g}"),
                  f"-{l.variance_reduction:.0%}" if m.cuped else "–",
                  "[green]gain[/green]" if m.significant and l.abs_lift > 0 else "[red]loss[/red]" if m.significant
                  else "n.s.")
    console.print(t)
    t = Table(title="Guardrails")
    for c in ("guardrail", "arm", "control", "treatment", "change [95% CI]", "status"):
        t.add_column(c)
    for g in result.guardrails:
        t.add_row(g.guardrail, g.arm, _f(g.control), _f(g.treatment), f"{_pct(g.rel_change)} {_ci(g.rel_ci)}",
                  "[red]BREACHED[/red] " + g.reason if g.breached else "[green]ok[/green]")
    console.print(t)
    s = result.srm
    console.print(f"SRM check: chi² = {s.chi2:.2f}, p = {s.p_value:.3g} → "
                  + ("[red]MISMATCH (p < 0.001)[/red]" if s.flagged else "[green]ok[/green]"))
    for p in result.power:
        console.print(f"Power ({p.metric}, {p.arm}): MDE at {result.options.target_power:.0%} power = "
                      f"{_pct(p.mde_rel)} relative; power for a {result.options.min_relevant_lift:.0%} lift = "
                      f"{_f(p.power_at_min_relevant_lift, '{:.0%}')}")
    a = result.data_quality.get("assignment", {})
    console.print(f"Assignment check: {a.get('arm_mismatches', 0)} of {a.get('units_checked', 0)} units disagree "
                  f"with the golden-pinned hash; orphan feedback rows: {result.data_quality.get('orphan_feedback_rows')}")


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f"<p class='muted'>({html.escape(alt)}: not enough data over time)</p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(result, *, golden_ok: bool | None = None) -> str:
    """One self-contained HTML page (inline CSS, plots embedded as base64 PNGs, no scripts)."""
    from experiments import _plots

    e = html.escape
    exp = result.experiment
    d = result.decision
    fg, bg = VERDICT_STYLE.get(d.verdict, ("#333", "#eee"))
    total = sum(a.units for a in result.arms) or 1
    arm_rows = [[e(a.arm), f"{a.units / total:.1%} <span class='muted'>(expected {a.expected_share:.0%})</span>",
                 str(a.units), str(a.requests), str(a.impressions), str(a.clicks), str(a.conversions),
                 _f(a.revenue, "{:.2f}"), _f(a.ctr, "{:.3%}"), _f(a.cvr, "{:.2%}"),
                 _f(a.revenue_per_1k_requests, "{:.2f}"), _f(a.fill_rate, "{:.1%}"), _f(a.ad_load, "{:.2f}"),
                 _f(a.latency_p99_ms, "{:.1f}")] for a in result.arms]
    metric_rows = []
    for m in result.metrics:
        l = m.lift
        sig = ("<b class='good'>significant gain</b>" if m.significant and l.abs_lift > 0 else
               "<b class='bad'>significant loss</b>" if m.significant else "not significant")
        metric_rows.append([("★ " if m.primary else "") + e(m.label), e(m.arm), _f(l.control), _f(l.treatment),
                            _pct(l.rel_lift), _ci(l.rel_ci), _f(l.p_value, "{:.3g}"), _f(m.p_adjusted, "{:.3g}"),
                            _f(m.seq_p_adjusted, "{:.3g}"),
                            f"−{l.variance_reduction:.0%}" if m.cuped else "–", sig])
    guard_rows = [[e(g.label), e(g.arm), _f(g.control), _f(g.treatment), _pct(g.rel_change), _ci(g.rel_ci),
                   f"<b class='bad'>BREACHED</b>: {e(g.reason)}" if g.breached else "<span class='good'>ok</span>"]
                  for g in result.guardrails]
    power_rows = [[e(p.arm), e(p.metric), _f(p.se), _f(p.mde_abs), _pct(p.mde_rel),
                   _f(p.power_at_min_relevant_lift, "{:.0%}")] for p in result.power]
    q = result.data_quality
    a = q.get("assignment", {})
    checks = [
        ["Sample ratio (SRM)", f"chi² = {result.srm.chi2:.2f}, p = {result.srm.p_value:.3g}",
         "<b class='bad'>MISMATCH</b>" if result.srm.flagged else "<span class='good'>ok</span>"],
        ["Assignment vs golden-pinned hash", f"{a.get('arm_mismatches', 0)} of {a.get('units_checked', 0)} units differ",
         "<b class='bad'>FAIL</b>" if a.get("arm_mismatches") else "<span class='good'>ok</span>"],
        ["Golden cases (hash version)", "serving and analysis hash the same way",
         "–" if golden_ok is None else ("<span class='good'>ok</span>" if golden_ok else "<b class='bad'>FAIL</b>")],
        ["Feedback without an exposed unit", str(q.get("orphan_feedback_rows", 0)), "info"],
        ["Feedback tagged with another arm than the unit's", str(q.get("feedback_arm_mismatches", 0)), "info"],
        ["Units with pre-period data (CUPED)", str(q.get("units_with_pre_period", "–")), "info"],
    ]
    window = " to ".join(str(t)[:19] for t in result.window if t is not None)
    corr = "Holm" if result.options.correction == "holm" else "Benjamini-Hochberg"
    mode = ("The experiment is <b>running</b>: the decision uses always-valid (sequential) p-values, so looking "
            "now does not inflate false positives." if exp.status == "running" else
            f"The experiment is <b>{e(exp.status)}</b>: the decision uses fixed-horizon p-values.")
    arms_desc = "; ".join(f"<b>{e(arm.name)}</b> ({exp.weights[arm.name]:.0%}): "
                          + (e(", ".join(f"{k}={v}" for k, v in arm.params.overrides().items())) or "serving defaults")
                          for arm in exp.arms)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Experiment {e(exp.id)} — {e(d.verdict)}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }}
h1 {{ margin-bottom: 4px; }} .muted {{ color: #777; font-size: 0.9em; }}
.decision {{ border: 3px solid {fg}; background: {bg}; padding: 16px 20px; border-radius: 8px; margin: 16px 0; }}
.decision h2 {{ color: {fg}; margin: 0 0 8px 0; font-size: 1.6em; }}
table {{ border-collapse: collapse; margin: 8px 0 20px 0; font-size: 0.88em; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.good {{ color: #1b7f4b; }} .bad {{ color: #b3261e; }} img {{ max-width: 100%; border: 1px solid #eee; }}
dt {{ font-weight: bold; margin-top: 6px; }}
</style></head><body>
<h1>Experiment <code>{e(exp.id)}</code></h1>
<div class="muted">layer {e(exp.layer)} · unit {e(exp.unit_type)} · status {e(exp.status)} · data {e(window)} ·
primary metric {e(exp.primary_metric)} · control {e(exp.control)}</div>
<p>{e(exp.description)}</p><p>Arms: {arms_desc}</p>
<div class="decision"><h2>Decision: {e(d.verdict.upper())}{(" — " + e(d.arm)) if d.arm else ""}</h2>
<p><b>{e(d.headline)}</b></p><ul>{"".join(f"<li>{e(r)}</li>" for r in d.reasons)}</ul>
<p class="muted">{mode} Significance is judged at α = {result.options.alpha} after {corr} correction across
{len(result.metrics)} metric comparisons.</p></div>
<h2>Trust checks</h2>{_table(["check", "detail", "status"], checks)}
<h2>Cumulative lift over time</h2>
<p class="muted">The green band is the usual 95% confidence interval, valid only at a pre-planned end date. The orange band
is an always-valid 95% confidence sequence: it may be checked every day; the effect is significant when it excludes 0.</p>
{_img(_plots.timeline_png(result), "cumulative lift")}
<h2>Lift per metric</h2>{_img(_plots.forest_png(result), "lift per metric")}
{_table(["metric", "arm", "control", "treatment", "relative lift", "95% CI", "p", f"p ({corr})", "sequential p (adj.)",
         "CUPED variance", "result"], metric_rows)}
<h2>Per arm</h2>{_img(_plots.arms_png(result), "per-arm metrics")}
{_table(["arm", "share of units", "units", "requests", "impressions", "clicks", "conversions", "revenue", "CTR", "CVR",
         "revenue / 1k requests", "fill rate", "ad load", "latency p99 ms"], arm_rows)}
<h2>Guardrails</h2>{_table(["guardrail", "arm", "control", "treatment", "relative change", "95% CI", "status"], guard_rows)
                    if guard_rows else "<p>No guardrail data.</p>"}
<h2>Power</h2>
<p class="muted">Minimum detectable effect (MDE): the smallest true lift this sample would detect with
{result.options.target_power:.0%} probability. A non-significant result with an MDE above the lift that matters
({result.options.min_relevant_lift:.0%}) means "not enough data", not "no effect".</p>
{_table(["arm", "metric", "standard error", "MDE (absolute)", "MDE (relative)",
         f"power for a {result.options.min_relevant_lift:.0%} lift"], power_rows)}
<h2>How to read this page</h2><dl>
<dt>Relative lift and 95% CI</dt><dd>(treatment − control) / control. Ratio metrics (CTR, CVR, revenue per
1,000 requests) use the delta method over units; p-values are Welch's t-test.</dd>
<dt>CUPED</dt><dd>Each unit's same metric before the experiment started is used to remove noise; the estimate stays
unbiased, the interval gets narrower by the shown variance reduction.</dd>
<dt>Sample ratio mismatch (SRM)</dt><dd>If the arms' unit counts differ from the configured split (chi-square p &lt; 0.001),
something in assignment or logging is broken and the lifts cannot be trusted.</dd>
<dt>Multiple testing</dt><dd>Several metrics are tested at once; {corr} correction keeps false "wins" rare.</dd>
<dt>Guardrails</dt><dd>Fill rate may not fall by more than 1%, ad load may not rise by more than 5%, p99 latency by
more than 10% (when measured) — with statistical significance.</dd></dl>
<p class="muted">Generated by <code>sightline experiments report {e(exp.id)} --format html</code>.</p>
</body></html>
"""
