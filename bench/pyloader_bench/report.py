"""The results: results.json, results.md (the markdown tables) and chart.png (matplotlib, optional)."""

from __future__ import annotations

import json
import os

from .driver import log, ratio


def _fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return f"{v}{unit}"


def _load_rows(lead: str, methods: dict) -> list:
    """`lead| method | median s | first call s | peak MB above baseline |` per method (or its error)."""
    rows = []
    for meth, r in methods.items():
        if "error" in r:
            rows.append(f"{lead}| {meth} | {r['error']} | | |")
        else:
            rows.append(f"{lead}| {meth} | {_fmt(r.get('warm_median_s'))} | {_fmt(r.get('first_call_s'))} | "
                        f"{r['peak_above_baseline_bytes'] / 1e6:.0f} |")
    return rows


def markdown(res: dict) -> str:
    mc = res["machine"]
    lines = [f"Run {res['started']} on {mc['cpu']}, {mc['cores']} cores, "
             f"{(mc['ram_bytes'] or 0) / 2**30:.1f} GiB RAM; {mc['platform']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in mc["versions"].items()),
             f"Repetitions: {res['repeat']} (median; one untimed warm-up run first). Cold cache: {res['cold_info']}",
             ""]
    for name, info in res["models"].items():
        lines.append(f"* `{name}`: {info['description']}: {info['file_bytes'] / 1e6:.1f} MB file, "
                     f"{info['param_bytes'] / 1e6:.1f} MB of float32 arrays after folding")
    lines += ["", "### Weights stage (file -> arrays in Keras layout, BN folded)", "",
              "| model | method | warm s | warm GB/s | cold s | cold GB/s | x pyloader (warm) | first call s "
              "| peak MB above baseline |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, w in res["weights"].items():
        ref = w["methods"]["pyloader_read"].get("warm_median_s")
        for meth, r in w["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | {meth} | {r['error']} | | | | | | |")
                continue
            lines.append(f"| {name} | {meth} | {_fmt(r.get('warm_median_s'))} | {_fmt(r.get('warm_gb_per_s'))} | "
                         f"{_fmt(r.get('cold_median_s'))} | {_fmt(r.get('cold_gb_per_s'))} | "
                         f"{_fmt(ratio(r.get('warm_median_s'), ref))} | {_fmt(r.get('first_call_s'))} | "
                         f"{r['peak_above_baseline_bytes'] / 1e6:.0f} |")
    lines += ["", "### Weights stage side by side (one process, alternating rounds, warm)", "",
              "| file | fold_bn | rounds | load avg | memcpy s | memcpy of the output s | pyloader.read s | OpenCV s "
              "| pyloader / memcpy | pyloader / memcpy of the output | OpenCV / pyloader |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = [(name, k, g) for name, w in res["weights"].items() for k, g in w.get("side_by_side", {}).items()]
    groups += [(name, "fold_bn=True", g) for name, g in (res.get("weights_pt") or {}).items() if isinstance(g, dict)]
    for name, fold, g in groups:
        if "error" in g:
            lines.append(f"| {name} | {fold} | {g['error']} | | | | | | | | |")
            continue
        med = {m: v["median_s"] for m, v in g["methods"].items()}
        lines.append(f"| {name} | {fold.split('=')[1]} | {g['rounds']} | {g['load_average_before']:.1f} | "
                     f"{_fmt(med['memcpy'])} | {_fmt(med.get('memcpy_output'))} | {_fmt(med['pyloader_read'])} | "
                     f"{_fmt(med.get('opencv'))} | {_fmt(g.get('pyloader_over_memcpy'))} | "
                     f"{_fmt(g.get('pyloader_over_memcpy_output'))} | {_fmt(g.get('opencv_over_pyloader'))} |")
    lines += ["", "### Ready keras.Model", ""]
    if not res["model"]:
        lines.append("not run (not in --sections)")
    else:
        lines += ["| model | method | median s | first call s | peak MB above baseline |", "|---|---|---|---|---|"]
    for name, mdl in res["model"].items():
        if "error" in mdl:
            lines.append(f"| {name} | {mdl['error']} | | | |")
            continue
        lines += _load_rows(f"| {name} ", mdl["methods"])
        lines.append(f"| {name} | speedup (keras / pyloader) | {_fmt(mdl.get('speedup_pyloader_vs_keras'))} | | |")
        bd = mdl.get("pyloader_load_breakdown_s") or {}
        if bd and "error" not in bd:
            lines.append(f"| {name} | pyloader.load breakdown | parse {_fmt(bd.get('parse'))}, read "
                         f"{_fmt(bd.get('read'))}, build {_fmt(bd.get('build'))}, assign {_fmt(bd.get('assign'))}; "
                         f"build with zero initializers {_fmt(bd.get('build_zeros_init'))}, under "
                         f"keras.StatelessScope {_fmt(bd.get('build_stateless_scope'))} | | |")
    lines += ["", "### Pickle stage (load_pickle: native opcode machine vs the Python reference interpreter)", ""]
    if not res.get("pickle"):
        lines.append("not run (not in --sections)")
    else:
        lines += ["| pickle | python MB/s | native MB/s | speedup |", "|---|---|---|---|"]
        for name, row in res["pickle"].items():
            lines.append(f"| {name} | {_fmt(row['python']['mb_per_s'])} | {_fmt(row['native']['mb_per_s'])} | "
                         f"{_fmt(row['speedup'])} |")
    lines += ["", "### YOLOv5 .pt", ""]
    pt = res.get("pt") or {}
    if not pt or "error" in pt:
        lines.append(f"not available: {pt.get('error', 'not run')}")
    else:
        lines += [f"{pt.get('description', '')}, {pt['file_bytes'] / 1e6:.1f} MB file, "
                  f"{pt['param_bytes'] / 1e6:.1f} MB of float32 arrays after folding", "",
                  "| method | median s | first call s | peak MB above baseline |", "|---|---|---|---|"]
        lines += _load_rows("", pt["methods"])
        lines.append(f"| speedup (yolov5 TF / pyloader) | {_fmt(pt.get('speedup_pyloader_vs_yolov5_tf'))} | | |")
    lines += ["", "### Ultralytics .pt", ""]
    ul = res.get("ultralytics") or {}
    if not ul or "error" in ul:
        lines.append(f"not available: {ul.get('error', 'not run')}")
    else:
        lines += [f"Ultralytics' route: {ul['route']}; export(format='saved_model'): {ul['export_saved_model']}", "",
                  "| model | method | median s | first call s | peak MB above baseline |", "|---|---|---|---|---|"]
        for name, r in ul["models"].items():
            if "error" in r:
                lines.append(f"| {name} | {r['error']} | | | |")
                continue
            lines += _load_rows(f"| {name} ", r["methods"])
            lines.append(f"| {name} | speedup (ultralytics / pyloader) | {_fmt(r.get('speedup_pyloader_vs_ultralytics'))} | | |")
            bt = r.get("bulk_template") or {}
            if bt:
                lines.append(f"| {name} | bulk: 2 checkpoints to .keras, the 2nd from the template | "
                             f"{'ok' if bt['ok'] else 'FAILED: ' + (bt.get('error') or '; '.join(bt['notes']))} "
                             f"in {bt['seconds']} s | | |")
    lines += ["", "### pyloader.load per Keras backend", ""]
    be = res.get("backends") or {}
    if not be:
        lines.append("not run (not in --sections)")
    else:
        lines += ["| model | backend | median s | first call s | read s | symbolic build s | create variables s |",
                  "|---|---|---|---|---|---|---|"]
        for label, per in be.items():
            for b, r in per.items():
                if "error" in r:
                    lines.append(f"| {label} | {b} | {r['error']} | | | | |")
                    continue
                bd = r.get("breakdown_s") or {}
                lines.append(f"| {label} | {b} | {_fmt(r['warm_median_s'])} | {_fmt(r['first_call_s'])} | "
                             f"{_fmt(bd.get('read'))} | {_fmt(bd.get('build'))} | {_fmt(bd.get('variables'))} |")
    lines += ["", "### pyloader.load vs keras.saving.load_model of the same model's .keras", "",
              "Each in a fresh process: the first call, then the median of repeated calls (`model = load(...)`)."]
    ld = res.get("load") or {}
    if not ld:
        lines.append("not run (not in --sections)")
    else:
        lines += ["", "| model | backend | pyloader median s | load_model median s | x (repeated) | pyloader first s "
                  "| load_model first s | x (first) | pyloader read s | models built |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label, per in ld.items():
            for b, r in per.items():
                ours, theirs = r.get("pyloader_load", r), r.get("keras_load_model", {})
                if "error" in ours or "error" in theirs:
                    lines.append(f"| {label} | {b} | {ours.get('error') or theirs.get('error')} | | | | | | | |")
                    continue
                lines.append(f"| {label} | {b} | {_fmt(ours['warm_median_s'])} | {_fmt(theirs['warm_median_s'])} | "
                             f"{_fmt(r['speedup_repeated'])} | {_fmt(ours['first_call_s'])} | "
                             f"{_fmt(theirs['first_call_s'])} | {_fmt(r['speedup_first_call'])} | "
                             f"{_fmt(ours['read_median_s'])} | {ours['models_built']} |")
    lines += ["", "### Bulk", ""]
    bulk = res.get("bulk") or {}
    if not bulk or "error" in bulk:
        lines.append(f"not available: {bulk.get('error', 'not run')}")
    else:
        lines += [f"{bulk['checkpoints']} checkpoints of `{bulk['model']}` to .keras", "",
                  "| method | total s | per checkpoint s (mean) | median save s | peak MB above baseline |",
                  "|---|---|---|---|---|"]
        for meth, r in bulk["methods"].items():
            if "error" in r:
                lines.append(f"| {meth} | {r['error']} | | | |")
            else:
                lines.append(f"| {meth} | {_fmt(r['total_s'])} | {_fmt(r['mean_per_checkpoint_s'])} | "
                             f"{_fmt(r.get('median_save_s'))} | {r['peak_above_baseline_bytes'] / 1e6:.0f} |")
        lines.append(f"| speedup (separate / convert) | {_fmt(bulk.get('speedup_convert_vs_separate'))} | | | |")
        if bulk.get("formats"):
            lines += ["", f"Per format, `pyloader.convert` of the {bulk['checkpoints']} checkpoints (templates: the "
                      "first runs the exporter on probe weights, the others are written from its bytes); floor = "
                      "the same run without the conversion: `pyloader.read` of each checkpoint after the first + writing "
                      "its output's bytes to a new file, kept as the run keeps its outputs (medians; write s: that, "
                      "and a file deleted at once, which gets the pages of the last back); with hash: "
                      "max(floor, SHA-256 of the source), which every output's metadata holds", "",
                      f"peak and RSS: above the baseline after importing the format's framework; parameters "
                      f"{bulk['param_bytes'] / 1e6:.1f} MB", "",
                      "| format | output MB | first s | median after first s | read s | write s | SHA-256 s | after "
                      "first / floor | after first / floor with hash | total s | peak MB above baseline | peak / "
                      "parameter bytes | RSS MB above baseline after 10, 100, all | RSS growth 10 -> 100 % | notes |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for fmt, r in bulk["formats"].items():
                if "error" in r:
                    lines.append(f"| {fmt} | {r['error']} |" + " |" * 13)
                    continue
                lines.append(f"| {fmt} | {r['output_bytes'] / 1e6:.1f} | {_fmt(r['first_s'])} | "
                             f"{_fmt(r.get('median_after_first_s'))} | {_fmt(r['read_s'])} | "
                             f"{_fmt(r['write_output_bytes_s'])}, {_fmt(r.get('write_deleted_at_once_s'))} | "
                             f"{_fmt(r.get('sha256_s'))} | "
                             f"{_fmt(r.get('after_first_over_floor'))} | "
                             f"{_fmt(r.get('after_first_over_floor_with_hash'))} | "
                             f"{_fmt(r['total_s'])} | {r['peak_above_baseline_bytes'] / 1e6:.0f} | "
                             f"{_fmt(r.get('peak_over_param_bytes'))} | "
                             f"{', '.join(f'{v / 1e6:.0f}' for v in (r.get('rss_above_baseline_after') or {}).values())}"
                             f" | {_fmt(r.get('rss_growth_10_to_100_pct'))} | {'; '.join(r.get('notes') or [])[:200]} |")
    td = res.get("tflite_direct") or {}
    if td:
        lines += ["", "### One checkpoint to TFLite (fresh process, wall time with imports, medians)", "",
                  "| model | direct, JAX | direct, TensorFlow | direct, torch | TF converter | Ultralytics "
                  "export(format='litert') | Ultralytics / fastest direct | Ultralytics / direct on TensorFlow |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, r in td.items():
            if "error" in r:
                lines.append(f"| {model} | {r['error']} |" + " |" * 6)
                continue

            def med(k, r=r):
                return (r.get(k) or {}).get("wall_median_s")
            ul, tf = med("ultralytics_litert"), med("direct_tensorflow")
            lines.append(f"| {model} | {_fmt(med('direct_jax'))} | {_fmt(tf)} | {_fmt(med('direct_torch'))} | "
                         f"{_fmt(med('converter'))} | {_fmt(ul)} | {_fmt(r.get('speedup_vs_ultralytics_litert'))} | "
                         f"{_fmt(ul / tf if ul and tf else None)} |")
    lines += ["", "### Targets", ""]
    if res.get("smoke"):
        lines += ["Not scored: --small is a smoke run (the small model, few repeats); targets are scored on full "
                  "runs only.", ""]
    lines += ["| target | measured | goal | met |", "|---|---|---|---|"]
    for t in res["targets"]:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "missed")
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {t['goal']} | {met} {t['note']} |")
    return "\n".join(lines) + "\n"


def write_results(res: dict, out: str) -> None:
    """results.json, results.md and chart.png in `out`; the markdown printed."""
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    msg = chart(res, os.path.join(out, "chart.png"))
    if msg:
        log(msg)
    print(md)
    log(f"wrote {out}/results.json, results.md" + ("" if msg else ", chart.png"))


def chart(res: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'pyloader[bench]'): no chart"
    groups = []
    for name, w in res["weights"].items():
        groups.append((f"weights stage: {name} (warm)",
                       {k: v.get("warm_median_s") for k, v in w["methods"].items() if "error" not in v}))
    for name, mdl in res["model"].items():
        if "methods" in mdl:
            groups.append((f"ready model: {name}",
                           {k: v.get("warm_median_s") for k, v in mdl["methods"].items() if "error" not in v}))
    pt = res.get("pt") or {}
    if pt.get("methods"):
        groups.append(("YOLOv5 .pt", {k: v.get("warm_median_s") for k, v in pt["methods"].items() if "error" not in v}))
    for name, r in ((res.get("ultralytics") or {}).get("models") or {}).items():
        if r.get("methods"):
            groups.append((f"Ultralytics .pt: {name}",
                           {k: v.get("warm_median_s") for k, v in r["methods"].items() if "error" not in v}))
    bulk = res.get("bulk") or {}
    if bulk.get("methods"):
        groups.append((f"bulk: per checkpoint ({bulk['model']})",
                       {k: v.get("mean_per_checkpoint_s") for k, v in bulk["methods"].items() if "error" not in v}))
    groups = [(t, {k: v for k, v in g.items() if v}) for t, g in groups]
    groups = [(t, g) for t, g in groups if g]
    if not groups:
        return "nothing timed in seconds to chart (only MB/s sections ran)"
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.0 + 1.1 * sum(len(g) for _, g in groups) / 2 + len(groups)))
    if len(groups) == 1:
        axes = [axes]
    for ax, (title, g) in zip(axes, groups):
        names = list(g)
        vals = [g[n] for n in names]
        colors = ["tab:green" if n.startswith(("pyloader", "pt_pyloader", "ul_pyloader", "bulk_convert")) else "tab:gray" for n in names]
        ax.barh(names, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.3g} s", va="center", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log")
        ax.tick_params(labelsize=8)
        ax.set_xlim(min(vals) / 2, max(vals) * 4)
    mc = res["machine"]
    fig.suptitle(f"pyloader bench: medians of {res['repeat']}; {mc['cpu']}, {mc['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None
