"""Writing a run's results: results.json, results.md (the tables docs/benchmarks.md shows)
and one PNG chart per workload (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from common import Figure, Results


def write(results: Results, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    try:
        charts(results, out)
    except Exception as exc:  # a chart must never cost the figures
        print(f"charts not drawn: {type(exc).__name__}: {exc}")


def _value(f: Figure) -> str:
    if f.value is None:
        return "n/a"
    if abs(f.value) >= 100:
        return f"{f.value:,.0f}"
    return f"{f.value:.3g}"


def markdown(results: Results) -> str:
    meta = results.meta
    lines = [
        f"Run {meta.get('date', '?')} on {meta.get('machine', '?')}; Python "
        f"{meta.get('python', '?')}, taskfleet {meta.get('taskfleet', '?')}"
        f"{' (--quick)' if meta.get('quick') else ''}. Load average at start "
        f"{meta.get('load_average_start')}, at end {meta.get('load_average_end')}.",
        "",
    ]
    if results.targets:
        lines += ["| target | goal | measured | met? |", "| --- | --- | --- | --- |"]
        for t in results.targets:
            met = {True: "yes", False: "**no**", None: "not measured"}[t.met]
            why = f" {t.why}" if t.why else ""
            lines.append(f"| {t.name} | {t.goal} | {t.measured} | {met}{why} |")
        lines.append("")
    lines += ["| workload | backend | figure | value | unit |", "| --- | --- | --- | --- | --- |"]
    for f in results.figures:
        note = f" ({f.note})" if f.note else ""
        lines.append(f"| {f.workload} | {f.backend} | {f.name}{note} | {_value(f)} | {f.unit} |")
    return "\n".join(lines) + "\n"


def _pick(
    figures: Sequence[Figure], workload: str, name_part: str, unit: str | None = None
) -> list[Figure]:
    return [
        f
        for f in figures
        if f.workload == workload
        and name_part in f.name
        and f.value is not None
        and unit in (None, f.unit)
    ]


def charts(results: Results, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = results.figures
    drawn = [
        ("throughput", _pick(figures, "throughput", "tasks/s (submit"), "tasks/s", "backend"),
        ("latency", _pick(figures, "latency", "p50", "ms"), "ms", "name"),
        ("fleet-memory", _pick(figures, "fleet", "memory per agent"), "KiB", "name"),
        ("fleet-broadcast", _pick(figures, "fleet", "broadcast to all"), "s", "name"),
    ]
    for name, picked, unit, label in drawn:
        if not picked:
            continue
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(picked)))
        labels = [f"{f.backend}: {f.name}" if label == "name" else f.backend for f in picked]
        ax.barh(labels, [f.value or 0.0 for f in picked], color="#4878a8")
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(f"{name} ({results.meta.get('date', '')})")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
    _depth_chart(results, out, plt)


def _depth_chart(results: Results, out: Path, plt: object) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for f in results.figures:
        if f.workload == "depth" and f.name.startswith("claim p50,") and f.unit == "ms":
            depth = float(f.note.split()[0].replace(",", ""))
            kind = f.name.removeprefix("claim p50,").strip()
            series.setdefault(f"{f.backend} {kind}", []).append((depth, f.value or 0.0))
    if not series:
        return
    fig, ax = plt.subplots(figsize=(7, 4))  # type: ignore[attr-defined]
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("queued tasks")
    ax.set_ylabel("claim latency p50 (ms)")
    ax.set_title(f"queue depth ({results.meta.get('date', '')})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "depth.png", dpi=110)
    plt.close(fig)  # type: ignore[attr-defined]
