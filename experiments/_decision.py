"""Turn an analysis into a plain-words decision: ship, don't ship, or keep running.

Order of precedence (each step explains itself in the reasons):
1. Trust: a sample-ratio mismatch (p < 0.001) or units whose logged arm disagrees with
   the golden-pinned assignment void the comparison → don't ship, investigate.
2. Guardrails: an arm that breaches fill rate, ad load or latency is not shipped.
3. Primary metric after multiple-testing correction: while the experiment runs, the
   always-valid (sequential) p-values decide, so looking early is safe; once stopped,
   the fixed-horizon ones. A significant gain → ship that arm; a significant loss →
   don't ship it.
4. Nothing significant: if the experiment cannot yet detect the smallest relevant lift
   (minimum detectable effect above it, or fewer units than planned) → keep running;
   otherwise the effect is too small to matter → don't ship.
"""

from __future__ import annotations

import math


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.2%}"


def decide(result):
    from experiments._analysis import Decision

    exp = result.experiment
    opts = result.options
    running = exp.status == "running"
    reasons: list[str] = []
    assignment = result.data_quality.get("assignment", {})
    if result.srm.flagged:
        obs = ", ".join(f"{a}: {n}" for a, n in result.srm.observed.items())
        exp_share = ", ".join(f"{a}: {w:.0%}" for a, w in result.srm.expected_share.items())
        reasons.append(f"Sample ratio mismatch: units per arm ({obs}) do not match the configured split "
                       f"({exp_share}); chi-square p = {result.srm.p_value:.2g} < 0.001. The arms are not "
                       "comparable — check assignment, exposure logging and bot filtering before trusting any lift.")
    if assignment.get("arm_mismatches", 0) > 0:
        reasons.append(f"{assignment['arm_mismatches']} of {assignment['units_checked']} units were logged in an arm "
                       "other than the one the assignment hash gives them; serving used a different definition or salt.")
    if reasons:
        return Decision("don't ship", None, "Don't ship: the data fails the trust checks; investigate first.",
                        tuple(reasons))

    use_seq = running
    kind = "always-valid (sequential)" if use_seq else "fixed-horizon"
    primary = [m for m in result.metrics if m.primary]
    breached = {g.arm: [] for g in result.guardrails}
    for g in result.guardrails:
        if g.breached:
            breached[g.arm].append(g.reason)
    winners, losers, neutral = [], [], []
    for m in primary:
        sig = m.seq_significant if use_seq else m.significant
        p = m.seq_p_adjusted if use_seq else m.p_adjusted
        desc = (f"{m.label}: {m.arm} vs {m.control_arm} {_pct(m.lift.rel_lift)} "
                f"(95% CI {_pct(m.lift.rel_ci[0])} to {_pct(m.lift.rel_ci[1])}), {kind} p = {p:.3g} after "
                f"{'Holm' if opts.correction == 'holm' else 'Benjamini-Hochberg'} correction")
        if sig and m.lift.abs_lift > 0:
            winners.append((m, desc))
        elif sig:
            losers.append((m, desc))
        else:
            neutral.append((m, desc))
    secondary_losses = [m for m in result.metrics if not m.primary and m.lift.abs_lift < 0
                        and (m.seq_significant if use_seq else m.significant)]
    caveats = [f"Secondary metric {m.label} is significantly worse for {m.arm} ({_pct(m.lift.rel_lift)})."
               for m in secondary_losses]

    shippable = [(m, d) for m, d in winners if not breached.get(m.arm)]
    if shippable:
        best, desc = max(shippable, key=lambda md: md[0].lift.rel_lift)
        reasons = [desc, "Sample ratio matches the configured split (no SRM).", "All guardrails within tolerance."]
        return Decision("ship", best.arm, f"Ship '{best.arm}': it improves {best.label} and breaks no guardrail.",
                        tuple(reasons + caveats))
    for m, desc in winners:
        reasons.append(desc)
        reasons.extend(f"Guardrail breached for {m.arm}: {r}" for r in breached[m.arm])
    if winners:
        return Decision("don't ship", None, "Don't ship: the winning arm breaks a guardrail.", tuple(reasons + caveats))
    for arm, rs in breached.items():
        reasons.extend(f"Guardrail breached for {arm}: {r}" for r in rs)
    if losers:
        reasons = [d for _, d in losers] + reasons
        return Decision("don't ship", None, "Don't ship: the treatment makes the primary metric worse.",
                        tuple(reasons + caveats))
    if any(breached.values()):
        return Decision("don't ship", None, "Don't ship: a guardrail is breached and the primary metric did not improve.",
                        tuple(reasons + [d for _, d in neutral] + caveats))
    reasons = [d for _, d in neutral]
    underpowered = [p for p in result.power if not math.isfinite(p.mde_rel) or p.mde_rel > opts.min_relevant_lift]
    units = sum(a.units for a in result.arms)
    planned_short = exp.planned_units is not None and units < exp.planned_units
    if underpowered or planned_short:
        if underpowered:
            worst = max(underpowered, key=lambda p: p.mde_rel if math.isfinite(p.mde_rel) else math.inf)
            reasons.append(f"With {units} units the smallest lift detectable with {opts.target_power:.0%} power is "
                           f"{_pct(worst.mde_rel)} — above the {opts.min_relevant_lift:.0%} that matters; "
                           "more units are needed.")
        if planned_short:
            reasons.append(f"{units} of the {exp.planned_units} planned units so far.")
        if not running:
            reasons.append("The experiment is stopped: restart a new one with more traffic to conclude.")
        return Decision("keep running", None, "Keep running: no significant difference yet, and the test cannot "
                        "yet rule out a relevant effect.", tuple(reasons + caveats))
    reasons.append(f"The test could have detected a {opts.min_relevant_lift:.0%} lift (minimum detectable effect "
                   f"{_pct(max(p.mde_rel for p in result.power))}) and found none.")
    return Decision("don't ship", None, "Don't ship: no relevant effect on the primary metric; keep the control.",
                    tuple(reasons + caveats))
