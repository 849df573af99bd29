"""``sdg stats``: what a built dataset holds, as a terminal table and one self-contained HTML report a lead opens
to decide whether the dataset is ready.

Tables come from pandas DataFrames (one row per image, one per defect): composition overall and by generator and
split, boxes per image, importance, box sizes, description lengths, the share of each image its defects cover (the
area of the union of its boxes, overlaps counted once, with shapely), and the rejects of every stage by reason.
Plots share their bins across labels; a gallery shows sample images per generator with their boxes drawn (a fixed
seed, clean images included). Plots and thumbnails are embedded, so the HTML file is the whole report.
"""

from __future__ import annotations

import base64
import html
import io
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.records import LABELS, ImageRecord, count_words


COMPOSITION = ("clean", "artifact-only", "misalignment-only", "both", "not annotated")
GALLERY_PER_GENERATOR = 6
GALLERY_GENERATORS = 12  # the gallery shows the most frequent generators: images held and embedded stay bounded


def _kind(r: ImageRecord) -> str:
    if not r.annotated:
        return "not annotated"  # not clean: nobody has looked yet
    labels = {d.label for d in r.defects}
    if not labels:
        return "clean"
    return "both" if len(labels) == 2 else f"{next(iter(labels))}-only"


def covered_share(boxes: list[Any]) -> float:
    """The share of the image (0-1) covered by the union of ``boxes`` (grid Boxes): overlaps count once."""
    if not boxes:
        return 0.0
    from shapely import box as rect
    from shapely import union_all

    from sdg_data.boxes import GRID

    return float(union_all([rect(*b.clamp()) for b in boxes]).area) / (GRID * GRID)


def frames(recs: list[ImageRecord]):
    """(images, defects) DataFrames: a row per image with its kind, box counts and covered shares; a row per
    defect with its label, importance, box area share and description length."""
    import pandas as pd

    images, defects = [], []
    for r in recs:
        row = {"image_id": r.image_id, "generator": r.generator or "unknown", "split": r.split or "none",
               "kind": _kind(r), "boxes": len(r.defects)}  # fmt: skip
        row["covered_all"] = covered_share([d.box for d in r.defects])
        for lab in LABELS:
            mine = r.defects_of(lab)
            row[f"boxes_{lab}"] = len(mine)
            row[f"covered_{lab}"] = covered_share([d.box for d in mine])
        if not r.annotated:  # no verdict: out of every per-image mean (NaN is skipped), never counted as 0 boxes
            row.update({k: float("nan") for k in row if k.startswith(("boxes", "covered"))})
        images.append(row)
        for d in r.defects:
            defects.append({"image_id": r.image_id, "generator": row["generator"], "label": d.label,
                            "importance": d.importance, "area_share": d.box.area_share,
                            "words": count_words(d.description)})  # fmt: skip
    cols = ["image_id", "generator", "label", "importance", "area_share", "words"]
    return pd.DataFrame(images), pd.DataFrame(defects, columns=cols)


def _mean(column, digits: int) -> float | None:
    """The mean over the annotated images (NaN rows skipped), None when there is none."""
    value = column.mean()
    return None if value != value else round(float(value), digits)


def _quantile_table(df, column: str, by: str = "label"):
    import pandas as pd

    if df.empty:
        return pd.DataFrame()
    q = df.groupby(by)[column].describe(percentiles=[0.1, 0.25, 0.5, 0.75, 0.9])
    overall = df[column].describe(percentiles=[0.1, 0.25, 0.5, 0.75, 0.9]).to_frame("all").T
    return pd.concat([q, overall]).rename(columns={"count": "n"}).round(4)


def _composition(img, by: str | None):
    import pandas as pd

    if by is None:
        t = img["kind"].value_counts().reindex(list(COMPOSITION), fill_value=0).to_frame("images").T
        t.index = ["all"]
    else:
        t = pd.crosstab(img[by], img["kind"]).reindex(columns=list(COMPOSITION), fill_value=0)
    t["total"] = t.sum(axis=1)
    for k in COMPOSITION:
        t[f"{k} %"] = (100 * t[k] / t["total"].clip(lower=1)).round(1)
    return t


def dataset_stats(folder: str | Path, split: str = "all") -> dict[str, Any]:
    """The figures of a built dataset (one ``split``: all, test or train), or of a records JSONL (annotations before a
    build: the rejects are those of the stage reports beside it)."""
    from sdg_data.io.arrow import read_split
    from sdg_data.io.jsonl import input_kind, load_records

    folder = Path(folder)
    if folder.is_file() and input_kind(folder) == "jsonl":
        recs, meta = load_records(folder), folder.parent
    else:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: neither a dataset built by sdg build nor a records JSONL")
        recs, meta = read_split(folder, split), folder / "meta"
    img, dfs = frames(recs)
    n = len(img)
    comp = Counter(img["kind"]) if n else Counter()
    per_gen: dict[str, dict[str, Any]] = {}
    for g, part in img.groupby("generator") if n else []:
        per_gen[str(g)] = {"images": len(part), **{f"{lab}_per_image": _mean(part[f"boxes_{lab}"], 3)
                                                   for lab in LABELS}}  # fmt: skip
    imps = dfs["importance"].dropna().tolist()
    from sdg_data.io.report import read_reports

    # every stage's rejects that travelled with the dataset (generate, pull, distill, build, ...), read as sidecars:
    # regular files only, capped; a malformed line (a list as its stage) is skipped and counted
    _, by_file, skipped_lines = read_reports(meta)
    rejects = [r for rows in by_file.values() for r in rows]
    reasons = Counter((r.get("stage", "?"), str(r.get("reason", ""))[:90]) for r in rejects)
    return {
        "images": n,
        "splits": dict(Counter(r.split for r in recs)),
        "composition": {k: comp[k] for k in COMPOSITION},
        "composition_pct": {k: round(100 * comp[k] / max(1, n), 1) for k in COMPOSITION},
        "by_generator": per_gen,
        "defects": {lab: int((dfs["label"] == lab).sum()) for lab in LABELS},
        "importance_histogram": np.histogram(imps, bins=10, range=(0.5, 100.5))[0].tolist() if imps else [],
        "importance_missing": int(dfs["importance"].isna().sum()),
        "importance_mean": round(float(np.mean(imps)), 2) if imps else None,
        "box_area_share_quantiles": _quantiles(dfs["area_share"].tolist()),
        "description_words_quantiles": _quantiles(dfs["words"].tolist()),
        "covered_share_mean": {
            **{lab: _mean(img[f"covered_{lab}"], 4) if n else None for lab in LABELS},
            "all": _mean(img["covered_all"], 4) if n else None,
        },
        "rejects": {
            "total": len(rejects),
            "by_stage": dict(Counter(r.get("stage", "?") for r in rejects)),
            "top_reasons": [{"stage": s, "reason": why, "count": c} for (s, why), c in reasons.most_common(10)],
            "malformed_lines_skipped": skipped_lines,
        },
        "_raw": {"folder": str(folder), "split": split, "images": img, "defects": dfs, "rejects": rejects},
    }


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    q = np.quantile(np.asarray(xs, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "p25", "median", "p75", "max"), (round(float(v), 4) for v in q)))


def format_stats(s: dict[str, Any]) -> str:
    lines = [f"images: {s['images']}  splits: {s['splits']}", "", "composition:"]
    for k in COMPOSITION:
        lines.append(f"  {k:<18} {s['composition'][k]:>7}  {s['composition_pct'][k]:5.1f}%")
    lines += ["", f"  {'generator':<20} {'images':>7} {'artifact/img':>13} {'misalign/img':>13}"]
    for g, v in ((g, s["by_generator"][g]) for g in _top_generators(s)):
        lines.append(
            f"  {g:<20} {v['images']:>7} {v['artifact_per_image']:>13.2f} {v['misalignment_per_image']:>13.2f}"
        )
    lines += [
        "",
        f"defects: {s['defects']}  importance mean {s['importance_mean']} (missing {s['importance_missing']})",
        f"importance histogram (1-10 .. 91-100): {s['importance_histogram']}",
        f"box area share quantiles: {s['box_area_share_quantiles']}",
        f"description words quantiles: {s['description_words_quantiles']}",
        f"image share covered by defects (union of boxes), mean: {s['covered_share_mean']}",
        f"rejects: {s['rejects']['total']} by stage {s['rejects']['by_stage']}",
    ]
    for r in s["rejects"]["top_reasons"][:5]:
        lines.append(f"  {r['count']:>5} [{r['stage']}] {r['reason']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the HTML report
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;color:#222}
body{padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table.t{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
table.t th,table.t td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
table.t th{background:#f4f4f4} table.t td:first-child,table.t th:first-child{text-align:left}
.plots figure{margin:1rem 0} .plots img{width:100%;height:auto}
.filters{margin:.6rem 0} .filters label{margin-right:1.2rem;font-size:.9rem}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:.8rem}
.card{margin:0;border:1px solid #ddd;padding:.4rem;background:#fafafa}
.card img{width:100%;height:auto;cursor:zoom-in} figcaption{font-size:.85rem;color:#333}
.meta{color:#777;font-size:.78rem} .cap{font-style:italic;margin:.2rem 0}
ol{margin:.3rem 0;padding-left:1.3rem} li.clean{list-style:none;margin-left:-1.3rem;color:#2a7}
.full{display:none} .full:target{display:block;position:fixed;inset:0;background:rgba(0,0,0,.88);overflow:auto;
 padding:1.5rem;z-index:9;color:#eee} .full img{max-width:100%;height:auto;display:block;margin:0 auto}
.full .close{color:#fff;float:right;font-size:1.1rem}
.note{color:#666;font-size:.9rem}
"""
_FILTER_JS = """
const sel = [...document.querySelectorAll('select[data-filter]')];
function apply() {
  const want = Object.fromEntries(sel.map(s => [s.dataset.filter, s.value]));
  for (const c of document.querySelectorAll('.card')) {
    const ok = (!want.generator || c.dataset.generator === want.generator)
      && (!want.split || c.dataset.split === want.split)
      && (!want.label || c.dataset.labels.split(' ').includes(want.label));
    c.style.display = ok ? '' : 'none';
  }
}
sel.forEach(s => s.addEventListener('change', apply));
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colors() -> list[str]:
    """The labels' colours in sdg viz (artifact red, misalignment blue), so plots and gallery agree."""
    from sdg_data.dataset.viz import COLORS

    return ["#{:02x}{:02x}{:02x}".format(*COLORS[lab]) for lab in LABELS]


def _plots(s: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, dfs = s["_raw"]["images"], s["_raw"]["defects"]
    out = []
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh(list(COMPOSITION)[::-1], [s["composition_pct"][k] for k in COMPOSITION][::-1],
            color=["#999", "#a5a", "#55d", "#d55", "#7a7"])  # fmt: skip
    ax.set_xlabel("% of images")
    out.append(("Composition", _png(fig)))
    gens = _top_generators(s)
    if gens:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(gens) * 2))
        y = np.arange(len(gens))
        for k, lab in enumerate(LABELS):
            values = [np.nan if (v := s["by_generator"][g][f"{lab}_per_image"]) is None else v for g in gens]
            ax.barh(y + 0.4 * k - 0.2, values, 0.4, label=lab, color=_colors()[k])
        ax.set_yticks(y, [_plain(g) for g in gens])  # names are text, never mathtext
        ax.set_xlabel("boxes per image")
        ax.legend()
        out.append(("Boxes per image by generator and label", _png(fig)))
    specs = [
        (dfs, "importance", "Importance", np.arange(0.5, 101, 5)),
        (dfs, "area_share", "Box area (share of the image)", None),
        (dfs, "words", "Description length (words)", None),
    ]
    for frame, col, title, bins in specs:
        vals = frame[col].dropna()
        if vals.empty:
            continue
        edges = bins if bins is not None else np.histogram_bin_edges(vals.to_numpy(dtype=float), bins=25)
        fig, ax = plt.subplots(figsize=(6, 3))
        per_label = [frame.loc[frame["label"] == lab, col].dropna() for lab in LABELS]
        ax.hist(per_label, bins=edges, label=list(LABELS), color=_colors())  # one set of bins, side by side
        ax.set_xlabel(title)
        ax.set_ylabel("boxes")
        ax.legend()
        out.append((title + " (same bins for both labels)", _png(fig)))
    if len(img):
        cov = img[[f"covered_{lab}" for lab in LABELS] + ["covered_all"]]
        edges = np.linspace(0, 1, 21)
        fig, ax = plt.subplots(figsize=(6, 3))
        names = [c.removeprefix("covered_") for c in cov.columns]
        ax.hist([cov[c].dropna() for c in cov.columns], bins=edges, label=names, color=[*_colors(), "#555555"])
        ax.set_xlabel("share of the image covered by its defects (union of boxes)")
        ax.set_ylabel("images")
        ax.legend()
        out.append(("Defect coverage per image", _png(fig)))
    return out


def _plain(text: str) -> str:
    """Text for a plot shown as written: matplotlib reads ``$...$`` as mathtext (a generator named ``$\\x$`` would
    fail the whole report), so every dollar sign is escaped."""
    return str(text).replace("$", r"\$")


PER_GENERATOR_SHOWN = 30  # generators in the per-generator plots and tables (the report stays bounded)


def _top_generators(s: dict[str, Any]) -> list[str]:
    """The generators the per-generator plots and tables show: the most frequent, at most PER_GENERATOR_SHOWN."""
    gens = sorted(s["by_generator"], key=lambda g: (-s["by_generator"][g]["images"], g))
    return gens[:PER_GENERATOR_SHOWN]


def _shown_note(s: dict[str, Any]) -> str:
    n = len(s["by_generator"])
    return f" (the {PER_GENERATOR_SHOWN} most frequent of {n})" if n > PER_GENERATOR_SHOWN else ""


THUMB_SIDE, FULL_SIDE = 420, 1024  # gallery thumbnails and the full view, in pixels (the longer side)


def gallery(
    folder: str | Path,
    per_generator: int = GALLERY_PER_GENERATOR,
    seed: int = 0,
    split: str = "all",
    generators: list[str] | None = None,
) -> list[dict[str, str]]:
    """Sample images per generator (a fixed seed; clean ones included when there are any) drawn with their boxes,
    as embedded JPEG thumbnails. At most :data:`GALLERY_GENERATORS` generators (``generators``, most frequent
    first; else the first met), so however many generator names the records hold, the gallery holds and embeds
    at most ``GALLERY_GENERATORS x (per_generator + 1)`` images, kept encoded until drawn."""
    from PIL import Image

    from sdg_data.dataset.viz import draw_boxes
    from sdg_data.io.sources import iter_images

    # one pass, a reservoir per generator (and one clean image each): memory holds a few images per generator,
    # for a bounded number of generators, however large the dataset
    allowed = set(generators[:GALLERY_GENERATORS]) if generators is not None else None
    rng = random.Random(seed)
    pool: dict[str, list[tuple[ImageRecord, Any]]] = {}
    clean: dict[str, tuple[ImageRecord, Any]] = {}
    seen: dict[str, list[int]] = {}
    for rec, got in iter_images(folder, split=split, checked=True):
        gen = rec.generator or "unknown"
        if (allowed is not None and gen not in allowed) or (gen not in seen and len(seen) >= GALLERY_GENERATORS):
            continue
        im = got.data  # the encoded bytes: decoded only for the images finally shown
        n = seen.setdefault(gen, [0, 0])
        n[0] += 1
        chosen = pool.setdefault(gen, [])
        if len(chosen) < per_generator:
            chosen.append((rec, im))
        elif (j := rng.randrange(n[0])) < per_generator:
            chosen[j] = (rec, im)
        if rec.annotated and not rec.defects:
            n[1] += 1
            if rng.randrange(n[1]) == 0:
                clean[gen] = (rec, im)
    out = []
    for gen in sorted(pool):
        chosen = pool[gen]
        if gen in clean and not any(r.annotated and not r.defects for r, _ in chosen):
            chosen[-1] = clean[gen]  # a clean one too: what the annotators left alone matters
        for rec, data in chosen:
            with Image.open(io.BytesIO(data)) as im:
                full = draw_boxes(_upscaled(im.convert("RGB"), FULL_SIDE), rec.defects)
            thumb = full.copy()
            thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            labels = sorted({d.label for d in rec.defects}) or ["clean" if rec.annotated else "not annotated"]
            out.append({"generator": gen, "image_id": rec.image_id, "split": rec.split or "", "labels": labels,
                        "caption": rec.caption or "", "record": rec, "thumb": _jpeg(thumb),
                        "full": _jpeg(full, 90)})  # fmt: skip
    return out


def _upscaled(im: Any, side: int) -> Any:
    """Small images upscaled (nearest) so boxes and numbers stay legible; large ones shrunk to ``side``."""
    from PIL import Image

    k = side / max(im.size)
    if k < 1:
        im = im.copy()
        im.thumbnail((side, side))
        return im
    return im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.NEAREST)


def _jpeg(im: Any, quality: int = 85) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(k: int, g: dict[str, Any]) -> str:
    """One gallery card: the thumbnail (opens the full image with its boxes, no script needed), the caption and
    each defect as text, in the reader's own fonts, so any script shows."""
    esc = html.escape
    rec = g["record"]
    items = "".join(
        f"<li><b>{esc(d.label)}</b>{'' if d.importance is None else f' ({d.importance})'}: {esc(d.description)}</li>"
        for d in rec.defects
    )
    items = items or ("<li class='clean'>clean: no defect</li>" if rec.annotated else "<li>not annotated yet</li>")
    return (
        f"<figure class='card' data-generator='{esc(g['generator'])}' data-split='{esc(g['split'])}' "
        f"data-labels='{esc(' '.join(g['labels']))}'>"
        f"<a href='#full-{k}'><img src='{g['thumb']}' alt='{esc(g['image_id'])}'></a>"
        f"<figcaption><div class='meta'>{esc(g['generator'])} &middot; {esc(g['image_id'])}"
        f"{' &middot; ' + esc(g['split']) if g['split'] else ''}</div><div class='cap'>{esc(g['caption'])}</div>"
        f"<ol>{items}</ol></figcaption></figure>"
        f"<div class='full' id='full-{k}'><a href='#gallery' class='close'>close</a>"
        f"<img src='{g['full']}' alt='{esc(g['image_id'])} with its boxes'><ol>{items}</ol></div>"
    )


def _table(df, caption: str) -> str:
    """A table with its row labels as an ordinary first column (no empty index-name row above the header)."""
    if df is None or len(df) == 0:
        return f"<h3>{html.escape(caption)}</h3><p class='note'>none</p>"
    df = df.copy()
    df.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    names = [n or "" for n in df.index.names]
    df = df.reset_index(names=names if any(names) else [""] * len(names))
    return f"<h3>{html.escape(caption)}</h3>" + df.to_html(classes="t", border=0, index=False,
                                                            float_format=lambda v: f"{v:,.4g}")  # fmt: skip


def report_html(s: dict[str, Any]) -> str:
    """The report as one HTML document (plots and thumbnails embedded)."""
    import pandas as pd

    img, dfs, rejects = s["_raw"]["images"], s["_raw"]["defects"], s["_raw"]["rejects"]
    tables = [_table(_composition(img, None), "Composition, all images")] if len(img) else []
    if len(img):
        all_img, img = img, img[img["generator"].isin(_top_generators(s))]  # per-generator rows: the most frequent
        tables.append(_table(_composition(img, "generator"), f"Composition by generator{_shown_note(s)}"))
        tables.append(_table(_composition(all_img, "split"), "Composition by split"))
        per = img.groupby("generator")[[f"boxes_{lab}" for lab in LABELS] + ["boxes"]].agg(["mean", "max"])
        per.columns = [f"{a.removeprefix('boxes_') or 'all'} {b}" for a, b in per.columns]
        tables.append(_table(per.round(3), "Boxes per image by generator (mean, max)"))
        boxes = img["boxes"].dropna().astype(int).clip(upper=4)  # annotated images only
        dist = pd.crosstab(img.loc[boxes.index, "generator"], boxes.map(lambda v: "4+" if v == 4 else str(v)))
        tables.append(_table(dist, "Images by number of boxes"))
        cov = all_img[[f"covered_{lab}" for lab in LABELS] + ["covered_all"]]
        cov.columns = [c.removeprefix("covered_") for c in cov.columns]
        tables.append(_table(cov.describe(percentiles=[0.5, 0.9]).T.round(4),
                             "Share of the image covered by defects (union of boxes, overlaps once)"))  # fmt: skip
    tables.append(_table(_quantile_table(dfs, "importance"), "Importance by label"))
    tables.append(_table(_quantile_table(dfs, "area_share"), "Box area (share of the image) by label"))
    tables.append(_table(_quantile_table(dfs, "words"), "Description length (words) by label"))
    rej = pd.DataFrame(rejects, columns=["stage", "reason"]) if rejects else pd.DataFrame(columns=["stage", "reason"])
    if len(rej):
        rej["reason"] = rej["reason"].astype(str).str.slice(0, 120)
        by = rej.groupby(["stage", "reason"]).size().sort_values(ascending=False).to_frame("records").head(30)
        tables.append(_table(by, f"Rejects by stage and reason ({len(rej)} in all)"))
    else:
        tables.append(_table(None, "Rejects by stage and reason"))
    plots = "".join(f"<figure><img src='{src}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption>"
                    f"</figure>" for t, src in _plots(s))  # fmt: skip
    by_size = sorted(s["by_generator"], key=lambda g: (-s["by_generator"][g]["images"], g))
    shown = gallery(s["_raw"]["folder"], split=s["_raw"]["split"], generators=by_size)
    cards = "".join(_card(k, g) for k, g in enumerate(shown))
    skipped_note = (
        f" The {GALLERY_GENERATORS} most frequent of {len(by_size)} generators are shown."
        if len(by_size) > GALLERY_GENERATORS else ""
    )  # fmt: skip

    def choices(name: str, values) -> str:
        opts = "".join(f"<option value='{html.escape(v)}'>{html.escape(v)}</option>" for v in sorted(set(values)) if v)
        return f"<label>{name} <select data-filter='{name}'><option value=''>all</option>{opts}</select></label>"

    filters = (choices("generator", [g["generator"] for g in shown]) + choices("label", ["artifact", "misalignment",
               "clean"]) + choices("split", [g["split"] for g in shown]))  # fmt: skip
    head = (
        f"{s['images']} images ({', '.join(f'{k}: {v}' for k, v in s['splits'].items())}); "
        f"{sum(s['defects'].values())} defects; importance mean {s['importance_mean']}; "
        f"{s['rejects']['total']} records rejected upstream"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>SDG dataset report</title>"
        f"<style>{_CSS}</style></head><body><h1>SDG dataset report</h1><p class='note'>{html.escape(head)}</p>"
        f"<h2>Tables</h2>{''.join(tables)}<h2>Plots</h2><div class='plots'>{plots}</div>"
        f"<h2 id='gallery'>Gallery</h2><p class='note'>Up to {GALLERY_PER_GENERATOR} images per generator (fixed "
        f"seed), boxes numbered as in the lists (red: artifact, blue: misalignment); click an image for its full size."
        f"{skipped_note}</p><div class='filters'>{filters}</div><div class='gallery'>{cards}</div>"
        f"<script>{_FILTER_JS}</script></body></html>"
    )


def write_report(s: dict[str, Any], out_html: str | Path) -> Path:
    """Write the self-contained HTML report."""
    from sdg_data.io.files import write_text

    out_html = Path(out_html)
    write_text(out_html, report_html(s))
    return out_html
