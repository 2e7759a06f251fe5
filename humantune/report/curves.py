"""Training curves of a multi-stage run for the reports: one panel per stage (smoothed training scalars) and one
panel with a validation scalar of every stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StageCurves:
    """One stage's panel: its ``title``, its metrics.jsonl ``rows``, the ``series`` to draw from them as
    (key, line style, legend label), and its validation ``validation`` rows (by step)."""

    name: str
    title: str
    rows: list[dict]
    series: list[tuple[str, str, str]]
    validation: list[dict] = field(default_factory=list)


def stage_curves_figure(stages: list[StageCurves], validation_key: str, validation_title: str, smooth: int = 25):
    """A matplotlib figure: per stage its series (moving average over ~len/``smooth`` steps), then one panel of
    ``validation_key`` for every stage that has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(4 * (len(stages) + 1), 3), dpi=80, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        if stage.rows:
            steps = np.array([r["step"] for r in stage.rows])
            for key, style, label in stage.series:
                values = np.array([r.get(key, np.nan) for r in stage.rows], float)
                k = max(1, len(values) // smooth)
                ax.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), style, label=label)
            ax.legend(fontsize=7)
        ax.set_title(stage.title, fontsize=9)
        ax.set_xlabel("step")
    ax = axes[0][-1]
    for stage in stages:
        val = [r for r in stage.validation if r.get(validation_key) is not None]
        if val:
            ax.plot([r["step"] for r in val], [r[validation_key] for r in val], "o-", label=stage.name)
    ax.set_title(validation_title, fontsize=9)
    ax.set_xlabel("stage step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
