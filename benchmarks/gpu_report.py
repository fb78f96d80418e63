"""The readable table of ``benchmarks/gpu_check.py``: steps, goals and speed figures, in markdown."""

from __future__ import annotations

from typing import Any


def _fmt_goal(g: dict[str, Any]) -> str:
    """The measured value in the unit its target is written in (">= 4x", ">= 92 %", "< 5 s")."""
    v = g["value"]
    if v is None:
        return "-"
    if g["target"].endswith("x"):
        return f"{v:.2f}x"
    if g["target"].endswith("%"):
        return f"{v * 100:.2f} %"
    if g["target"].endswith(" s"):
        return f"{v:.2f} s"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _speed_rows(speed: dict[str, Any]) -> list[str]:
    lines = ["", "| figure | vdcnn | reference | ratio |", "| --- | ---: | ---: | ---: |"]
    for depth, row in speed.get("depths", {}).items():
        ours, ref = row["vdcnn"], row["reference"]
        for key in ("train_bf16", "train_fp32", "infer_bf16", "infer_fp32"):
            if key in ours and key in ref:
                unit = "samples/s" if key.startswith("train") else "texts/s, model on device ids"
                lines.append(f"| d{depth} {key.replace('_', ' ')} ({unit}) | {ours[key]:,.0f} | {ref[key]:,.0f} | "
                             f"{ours[key] / ref[key]:.2f}x |")
            if f"{key}_end_to_end" in ours and key in ref:
                e2e = ours[f"{key}_end_to_end"]
                lines.append(f"| d{depth} {key.replace('_', ' ')} end to end (texts/s, encoding and copy back "
                             f"included) | {e2e:,.0f} | {ref[key]:,.0f} | {e2e / ref[key]:.2f}x |")
        lines.append(f"| d{depth} training, share of the bf16 matmul peak ({speed['matmul_peak_tflops']:.3g} TFLOP/s) | "
                     f"{row['fraction_of_peak'] * 100:.1f} % | {row['reference_fraction_of_peak'] * 100:.1f} % | |")
    if "epoch" in speed:
        e = speed["epoch"]
        lines.append(f"| d{e['depth']} epoch of {e['texts']:,} texts, scaled to 120,000 | {e['seconds_per_120k']:.2f} s | "
                     f"| |")
    return lines


def format_table(report: dict[str, Any]) -> str:
    smoke = " (smoke: tiny sizes, the figures mean nothing)" if report.get("smoke") else ""
    lines = [f"# vdcnn GPU check: {report.get('device') or '?'}{smoke}", "",
             f"started {report['started']}, {report.get('elapsed_s', 0):.0f} s (limit {report['time_limit_s']:.0f} s)",
             "", "| step | status | time | result |", "| --- | --- | ---: | --- |"]
    for name, e in report["steps"].items():
        text = e["results"].get("summary") if e["status"] == "ok" else (e["reason"] or "")
        secs = f"{e['seconds']:.0f} s" if e["seconds"] is not None else ""
        lines.append(f"| {name} | {e['status']} | {secs} | {(text or '').replace('|', '/')} |")
    if report["goals"]:
        lines += ["", "| goal | measured | target | met |", "| --- | ---: | --- | --- |"]
        for g in report["goals"]:
            met = {True: "yes", False: "NO", None: "-"}[g["met"]]
            lines.append(f"| {g['goal']} | {_fmt_goal(g)} | {g['target']} | {met} |")
    speed = report["steps"].get("speed", {}).get("results") or {}
    if speed.get("depths"):
        lines += _speed_rows(speed)
    return "\n".join(lines) + "\n"


