"""``--privacy EPS[,EPS...,off]``: the personalization rules again with DP-SGD at each epsilon per night.

Each level becomes a variant named ``RULE+dpEPS`` (``paper+dp3``) beside the plain ``RULE`` (off),
run on the same subjects, splits, central model and seeds as the plain rule.

**Visits in the synthetic experiments.** The corpora have no face tracks, so each subject's
adaptation clips are shuffled and cut into consecutive visits of 1, 2 or 3 clips (each size drawn
uniformly), seeded by the run's fine-tuning seed: every epsilon of one seed sees the same visits.
A visit is the DP example. The selection is the per-visit one of :mod:`vfer.privacy.selection`
(Eq. 1 and the threshold per clip, at most ``clips_per_visit`` per visit): with 30 adaptation clips
per subject the paper's P = 15 per class never binds, so both select the same clips and the
variants differ only in the fine-tune. The gate is not judged under DP (it reads clips outside
the accounting; docs/privacy.md). The lab draws its noise from the run's seed to be repeatable;
the node never does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vfer.cli import UserError
from vfer.privacy.accountant import plan_night
from vfer.privacy.options import EPSILON_MAX, PrivacyOptions

DP_TAG = "+dp"
#: fixed before any run: the privacy defaults of node.yaml
DELTA = 1e-5
CLIP = 1.0


def parse_levels(text: str) -> tuple[float | None, ...]:
    """``"1,3,8,off"`` -> (None, 1.0, 3.0, 8.0): ``off`` (the plain rule) first, then the epsilons."""
    levels: list[float | None] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if part == "off":
            level: float | None = None
        else:
            try:
                level = float(part)
            except ValueError:
                level = math.nan
            if not (math.isfinite(level) and 0 < level <= EPSILON_MAX):
                raise UserError(
                    f"--privacy {text!r}: {part!r} is not 'off' or an epsilon in (0, {EPSILON_MAX:g}]"
                )
        if level in levels:
            raise UserError(f"--privacy {text!r}: {part!r} is given twice")
        levels.append(level)
    if not levels:
        raise UserError("--privacy needs at least one level")
    return tuple(sorted(levels, key=lambda x: -1.0 if x is None else x))


def variant_names(rules: Sequence[str], levels: Sequence[float | None]) -> tuple[str, ...]:
    return tuple(r if e is None else f"{r}{DP_TAG}{e:g}" for r in rules for e in levels)


def split_variant(name: str) -> tuple[str, float]:
    """``"paper+dp3"`` -> ("paper", 3.0); ``"paper"`` -> ("paper", 0.0) (0: off)."""
    rule, tag, eps = name.partition(DP_TAG)
    if not tag:
        return name, 0.0
    try:
        value = float(eps)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= EPSILON_MAX):
        raise UserError(f"variant {name!r}: {eps!r} is not an epsilon in (0, {EPSILON_MAX:g}]")
    return rule, value


def group_visits(n_clips: int, seed: int) -> list[list[int]]:
    """Clip indices 0..n-1 shuffled and cut into visits of 1-3 clips (seeded)."""
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(n_clips)
    visits, i = [], 0
    while i < n_clips:
        size = int(rng.integers(1, 4))
        visits.append(sorted(int(j) for j in order[i : i + size]))
        i += size
    return visits


@dataclass(frozen=True)
class PrivateOutcome:
    weights: dict[str, np.ndarray]
    indices: np.ndarray  # the selected clips (indices into the subject's adaptation clips)
    labels: np.ndarray  # their pseudo labels
    loss_before: float
    loss_after: float
    report: dict[str, Any]  # visits, z, epsilon, clipping, for the report's rows

    def per_class(self, k: int) -> list[int]:
        return [int(n) for n in np.bincount(self.labels, minlength=k)]


def personalize_private(
    clips: Sequence[np.ndarray],
    probs: np.ndarray,
    start: dict[str, np.ndarray],
    profile: Any,
    seed: int,
) -> PrivateOutcome | None:
    """Visits, per-visit selection and the DP-SGD fine-tune at ``profile.privacy_epsilon``;
    None when no visit kept a clip."""
    from vfer.privacy.dpsgd import finetune_v_dp
    from vfer.privacy.selection import select_visit_clips

    options = PrivacyOptions(
        enabled=True, epsilon_per_night=profile.privacy_epsilon, delta=DELTA, clip=CLIP
    )
    visits = group_visits(len(clips), seed)
    sel = select_visit_clips(
        [probs[v] for v in visits], profile.p_threshold, options.clips_per_visit
    )
    if sel.count == 0:
        return None
    chosen = [np.asarray(visits[v])[c] for v, c in zip(sel.visits, sel.clips, strict=True)]
    plan = plan_night(options, sel.count, profile.ft_batch, profile.ft_epochs)
    tuned = finetune_v_dp(
        start,
        [[clips[int(i)] for i in idx] for idx in chosen],
        sel.labels,
        plan,
        lr=profile.ft_lr,
        seed=seed,
    )
    report = {
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        "visits": len(visits),
        "visits_used": sel.count,
        "noise_multiplier": plan.noise_multiplier,
        "sampling_rate": plan.sampling_rate,
        "steps": plan.steps,
        "clipped_share": tuned.clipped_share,
        "train_s": tuned.tuned.train_s,
    }
    return PrivateOutcome(
        tuned.tuned.weights,
        np.concatenate(chosen),
        np.concatenate(sel.labels),
        tuned.tuned.loss_before,
        tuned.tuned.loss_after,
        report,
    )


def _levels(variants: dict[str, dict[str, Any]]) -> list[tuple[float | None, str]]:
    """(epsilon or None, variant name) of the first rule's privacy levels, off first."""
    first = split_variant(next(iter(variants)))[0]
    out = []
    for name in variants:
        rule, eps = split_variant(name)
        if rule == first:
            out.append((eps or None, name))
    return sorted(out, key=lambda x: -1.0 if x[0] is None else x[0])


def privacy_rows(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per level: the gain's interval and what DP-SGD did (means over subject runs)."""
    rows = []
    for eps, name in _levels(variants):
        v = variants[name]
        dp = [r["privacy"] for r in v.get("subjects", []) if r.get("privacy")]
        rows.append(
            {
                "epsilon": eps,
                "variant": name,
                "micro_f1_change_ci": v.get("micro_f1_change_ci"),
                "macro_f1_change_ci": v.get("macro_f1_change_ci"),
                "runs": len(v.get("subjects", [])),
                **{
                    f"mean_{k}": float(np.mean([d[k] for d in dp])) if dp else None
                    for k in (
                        "visits_used",
                        "noise_multiplier",
                        "steps",
                        "clipped_share",
                        "train_s",
                    )
                },
            }
        )
    return rows


def has_privacy(variants: dict[str, Any] | None) -> bool:
    return bool(variants) and any(DP_TAG in n for n in variants or {})


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """The gain-vs-epsilon table of every section that ran with ``--privacy``."""
    lines: list[str] = []
    for key in ("within", "cross", "fedavg"):
        sec = report.get(key) or {}
        if not has_privacy(sec.get("variants")):
            continue
        lines += [
            f"## {key}: gain against epsilon per night (DP-SGD, delta {DELTA:g}, clip {CLIP:g})",
            "",
            "| epsilon per night | micro-F1 change [95% CI] | gained/lost/same | visits used | z | steps | clipped |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in privacy_rows(sec["variants"]):
            ci = r["micro_f1_change_ci"] or {}
            cells = (
                [
                    f"{r['mean_visits_used']:.1f}",
                    f"{r['mean_noise_multiplier']:.2f}",
                    f"{r['mean_steps']:.1f}",
                    f"{100 * r['mean_clipped_share']:.0f}%",
                ]
                if r["mean_noise_multiplier"] is not None
                else ["-", "-", "-", "-"]
            )
            level = "off" if r["epsilon"] is None else f"{r['epsilon']:g}"
            lines.append(
                f"| {level} | "
                f"{ci.get('mean', math.nan):+.3f} [{ci.get('ci_low', math.nan):+.3f}, {ci.get('ci_high', math.nan):+.3f}] | "
                f"{ci.get('gained', '-')}/{ci.get('lost', '-')}/{ci.get('same', '-')} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    return lines


def gain_vs_epsilon(plt: Any, variants: dict[str, dict[str, Any]], key: str) -> Any:
    """The mean micro-F1 change with its 95% interval at each epsilon; off as a band."""
    rows = [r for r in privacy_rows(variants) if r["micro_f1_change_ci"]]
    dp = [r for r in rows if r["epsilon"] is not None]
    off = [r for r in rows if r["epsilon"] is None]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    xs = [r["epsilon"] for r in dp]
    ys = [100 * r["micro_f1_change_ci"]["mean"] for r in dp]
    lo = [y - 100 * r["micro_f1_change_ci"]["ci_low"] for y, r in zip(ys, dp, strict=True)]
    hi = [100 * r["micro_f1_change_ci"]["ci_high"] - y for y, r in zip(ys, dp, strict=True)]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="DP-SGD (visit level)")
    if off:
        ci = off[0]["micro_f1_change_ci"]
        ax.axhline(100 * ci["mean"], color="tab:green", label="no DP")
        ax.axhspan(100 * ci["ci_low"], 100 * ci["ci_high"], color="tab:green", alpha=0.15)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(f"epsilon per night (delta {DELTA:g})")
    ax.set_ylabel("mean micro-F1 change (points, 95% CI)")
    ax.set_title(f"{key}: personalization gain against privacy")
    ax.legend(fontsize=8)
    return fig
