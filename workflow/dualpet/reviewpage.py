"""One self-contained review page per patient (``results/{patient}/review.html``).

What a reader needs to accept, reject or add lesions without another tool: coronal and
sagittal MIPs of both tracers side by side with the lesions numbered as in
``lesions.tsv``; one row per union lesion with axial and coronal crops of CT, PET and
fusion for both tracers, SUVmax, TBR, detected flags, origin and region; the candidates
detection rejected, with their reasons; and for each a ready line of ``review.tsv``
(position in that tracer's study, so the decision survives renumbering). Pictures are
embedded (base64 PNG): the page works offline and can be mailed.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from dualpet.geometry import voxel_spacing
from dualpet.interchange import lesion_id, read_voi, voi_label
from dualpet.review import REVIEW_COLUMNS

#: Crop half-width (mm) around a lesion, and the MIP's SUV window (upper end: this
#: multiple of the study's background SUVmean, at least MIP_MIN_SUV).
CROP_MM, MIP_BACKGROUND_MULTIPLE, MIP_MIN_SUV = 40.0, 5.0, 5.0
#: CT window for the crops (soft tissue).
CT_WINDOW = (-160.0, 240.0)


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", pad_inches=0.02)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _study(pet_path, ct_path, voi_path, seg_path):
    import nibabel as nib

    from dualpet.geometry import lps_affine
    from dualpet.io import read_json
    from dualpet.segmentation import ct_on_pet_grid

    pet = nib.load(str(pet_path))
    suv = np.asarray(pet.dataobj, dtype=np.float32)
    affine = lps_affine(pet.affine)
    ct = nib.load(str(ct_path))
    hu = ct_on_pet_grid(np.asarray(ct.dataobj, dtype=np.float32), lps_affine(ct.affine), suv.shape, affine, average=True)
    voi, _ = read_voi(voi_path)
    seg = read_json(seg_path)
    return {"suv": suv, "affine": affine, "hu": hu, "voi": voi, "seg": seg}


def _display(plane, affine_axes, affine):
    """A 2-D (a, b) plane with b = the z axis, as an image with superior up and, for the
    first axis x, the patient's right on the viewer's left (radiological)."""
    img = plane.T  # rows = z
    if affine[2, 2] > 0:
        img = img[::-1]  # superior (higher z) on top
    if affine[affine_axes, affine_axes] < 0:
        img = img[:, ::-1]
    return img


def _to_display(affine, axis, i, k, shape):
    """Voxel (i along the shown horizontal axis, k along z) -> (column, row) on the image."""
    col = i if affine[axis, axis] >= 0 else shape[axis] - 1 - i
    row = shape[2] - 1 - k if affine[2, 2] > 0 else k
    return col, row


#: MIP views are drawn this tall (pixels at the page's 80 dpi: the issue's "at least 600"),
#: and their lesion labels stacked in a margin beside each view, at least LABEL_GAP_PX apart,
#: each joined to its lesion by a leader line (labels never overlap, however close the lesions).
MIP_VIEW_PX, LABEL_GAP_PX, LABEL_MARGIN_PX = 640, 12, 44


def _stack(rows, gap, top, bottom):
    """Label rows (data units, increasing downwards) for targets at ``rows``: in the same
    order, at least ``gap`` apart, within [top, bottom] where there is room."""
    order = np.argsort(rows, kind="stable")
    y = np.asarray(rows, float)[order].copy()
    for n in range(1, len(y)):
        y[n] = max(y[n], y[n - 1] + gap)
    if len(y) and y[-1] > bottom:  # pushed past the bottom: push back up
        y[-1] = bottom
        for n in range(len(y) - 2, -1, -1):
            y[n] = min(y[n], y[n + 1] - gap)
    out = np.empty_like(y)
    out[order] = y
    return out


def mip_figure(studies, tracers, centroids, vmax, names):
    """Coronal and sagittal MIPs of both tracers in millimetres, MIP_VIEW_PX tall, lesions
    labelled in a margin beside each view with leader lines to their VOI centroids
    (``centroids``: tracer -> VOI label -> voxel; ``names``: VOI label -> lesion ID)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 80
    views = [(t, v, a, p) for t in tracers for v, a, p in (("coronal", 0, 1), ("sagittal", 1, 0))]
    widths = []
    for t, _, axis, _ in views:
        sp, shape = voxel_spacing(studies[t]["affine"]), studies[t]["suv"].shape
        widths.append(MIP_VIEW_PX * shape[axis] * sp[axis] / (shape[2] * sp[2]) + 2 * LABEL_MARGIN_PX)
    fw, fh = sum(widths) + 0.4 * dpi, MIP_VIEW_PX + 40  # pixels
    fig = plt.figure(figsize=(fw / dpi, fh / dpi), dpi=dpi)
    left = 0.2 * dpi  # the left edge of the next view's label margin (pixels)
    for (t, view, axis, proj), w in zip(views, widths):
        st = studies[t]
        sp, shape = voxel_spacing(st["affine"]), st["suv"].shape
        ax = fig.add_axes(((left + LABEL_MARGIN_PX) / fw, 10 / fh, (w - 2 * LABEL_MARGIN_PX) / fw, MIP_VIEW_PX / fh))
        left += w
        mip = st["suv"].max(axis=proj)
        ax.imshow(_display(mip, axis, st["affine"]), cmap="gray_r", vmin=0, vmax=vmax[t],
                  aspect=sp[2] / sp[axis], interpolation="nearest")  # fmt: skip
        points = [(names.get(label, lesion_id(label)), *_to_display(st["affine"], axis, ijk[axis], ijk[2], shape))
                  for label, ijk in centroids[t].items()]  # fmt: skip
        rows_per_px = shape[2] / MIP_VIEW_PX
        pad = 4 * rows_per_px * sp[2] / sp[axis]  # 4 px, in columns
        for side in ("left", "right"):  # each lesion labelled in the margin on its own side
            mine = [p for p in points if (p[1] < shape[axis] / 2.0) == (side == "left")]
            ys = _stack([r for _, _, r in mine], LABEL_GAP_PX * rows_per_px, 0.0, shape[2] - 1.0)
            x = -0.5 - pad if side == "left" else shape[axis] - 0.5 + pad
            for (lesion, c, r), y in zip(mine, ys):
                ax.annotate(lesion, (c, r), xytext=(x, y), textcoords="data", color="#d62728", fontsize=8,
                            weight="bold", va="center", ha="right" if side == "left" else "left", annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "color": "#d62728", "lw": 0.6, "shrinkA": 0, "shrinkB": 2})  # fmt: skip
        ax.set_title(f"{t}: {view} MIP (SUV 0-{vmax[t]:.1f})", fontsize=10)
        ax.axis("off")
    return _png(fig)


def _grey(img, lo, hi, invert=False):
    g = np.clip((np.asarray(img, float) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return 1.0 - g if invert else g


def _hot(g):
    """The 'hot' colour map on values in [0, 1] (black, red, yellow, white)."""
    return np.stack([np.clip(3 * g, 0, 1), np.clip(3 * g - 1, 0, 1), np.clip(3 * g - 2, 0, 1)], axis=-1)


def _outline(mask):
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def _tile(rgb, scale):
    """Nearest-neighbour enlargement of an (h, w, 3) tile to the display's pixel size."""
    return np.repeat(np.repeat(rgb, scale[0], axis=0), scale[1], axis=1)


def crop_figure(studies, tracers, centres, lesion, tile_px=120):
    """Axial and coronal crops of CT, PET and fusion for each tracer around the lesion, the
    VOI outlined in blue, as one PNG (drawn with numpy and Pillow: fast enough for one
    per lesion). ``centres``: tracer -> voxel (i, j, k) or None (outside its PET)."""
    from PIL import Image, ImageDraw

    rows = []
    captions = []
    label = voi_label(lesion)
    for t in tracers:
        st, centre = studies[t], centres.get(t)
        if centre is None:
            rows.append(np.full((tile_px, 6 * (tile_px + 4), 3), 255, np.uint8))
            captions.append(f"{t}: outside this PET")
            continue
        sp = voxel_spacing(st["affine"])
        half = np.ceil(CROP_MM / sp).astype(int)
        tiles = []
        for view in ("axial", "coronal"):
            lo = np.asarray(centre) - half
            idx = [np.clip(np.arange(lo[a], lo[a] + 2 * half[a] + 1), 0, st["suv"].shape[a] - 1) for a in range(3)]
            if view == "axial":
                pick = np.ix_(idx[0], idx[1], [centre[2]])
                orient = lambda a: a[:, :, 0].T  # noqa: E731 - rows = y (anterior up), columns = x
                px = (sp[1], sp[0])
            else:
                pick = np.ix_(idx[0], [centre[1]], idx[2])
                orient = lambda a: a[:, 0, :].T[::-1]  # noqa: E731 - rows = z (superior up)
                px = (sp[2], sp[0])
            suv, hu, voi = (orient(a[pick]) for a in (st["suv"], st["hu"], st["voi"] == label))
            vmax = max(float(suv.max()), 1e-3)
            ct = _grey(hu, *CT_WINDOW)
            pet = _grey(suv, 0.0, vmax, invert=True)
            g = _grey(suv, 0.0, vmax)
            alpha = np.where(g >= 0.15, 0.6, 0.0)[..., None]
            fusion = (1 - alpha) * ct[..., None] + alpha * _hot(g)
            scale = (max(1, round(tile_px * px[0] / (2 * CROP_MM))), max(1, round(tile_px * px[1] / (2 * CROP_MM))))
            edge = _outline(_tile(voi[..., None], scale)[..., 0])  # a one-pixel line on the enlarged tile
            for img in (np.repeat(ct[..., None], 3, -1), np.repeat(pet[..., None], 3, -1), fusion):
                big = _tile((img * 255).astype(np.uint8), scale)
                big[edge] = (31, 119, 180)
                tile = big[:tile_px, :tile_px]
                pad = np.full((tile_px, tile_px + 4, 3), 255, np.uint8)
                pad[: tile.shape[0], : tile.shape[1]] = tile
                tiles.append(pad)
        rows.append(np.concatenate(tiles, axis=1))
        captions.append(f"{t}: axial CT, PET, fusion | coronal CT, PET, fusion (80 mm)")
    height = sum(r.shape[0] + 16 for r in rows)
    canvas = Image.new("RGB", (max(r.shape[1] for r in rows), height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for r, caption in zip(rows, captions):
        draw.text((2, y + 2), caption, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(r), (0, y + 16))
        y += r.shape[0] + 16
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _centroid_voxels(voi):
    """VOI label -> its centroid voxel (rounded)."""
    from scipy import ndimage

    labels = [int(v) for v in np.unique(voi) if v]
    if not labels:
        return {}
    cents = ndimage.center_of_mass(voi > 0, voi, labels)
    return {lab: tuple(int(round(c)) for c in cent) for lab, cent in zip(labels, cents)}


def _fmt(v, digits=2):
    """A number for the page: ``digits`` decimals; empty for a missing value (never nan or None)."""
    if not _present(v):
        return ""
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return html.escape(str(v))


def _present(v):
    """Whether a table cell holds a value (not empty, None or NaN)."""
    return v is not None and str(v) not in ("", "nan", "None") and not (isinstance(v, float) and np.isnan(v))


def review_row(patient, tracer, lps, decision, lesion=""):
    """A line of review.tsv for this decision (tab-separated, REVIEW_COLUMNS order; reader
    and note left for the reader)."""
    values = {"patient": patient, "tracer": tracer, "decision": decision, "lesion": lesion,
              **{axis: f"{v:.1f}" for axis, v in zip("xyz", lps)}}  # fmt: skip
    return "\t".join(values.get(col, "") for col in REVIEW_COLUMNS)


def write_review_page(out, patient, tracers, lesions_tsv, studies_paths, mip_png=None):
    """Write the patient's review page. ``studies_paths``: tracer -> dict with ``pet``,
    ``ct``, ``voi`` and ``segmentation`` paths. ``mip_png``: also write the page's MIP panel
    there (the Snakemake report's per-patient picture)."""
    from dualpet.geometry import apply_affine
    from dualpet.cohort import read_tsv
    from dualpet.io import write_text

    lesions = read_tsv(lesions_tsv)
    studies = {t: _study(p["pet"], p["ct"], p["voi"], p["segmentation"]) for t, p in studies_paths.items()}
    centroids = {t: _centroid_voxels(studies[t]["voi"]) for t in tracers}
    names = {voi_label(les): les for les in lesions["lesion"]}
    vmax = {t: max(MIP_MIN_SUV, MIP_BACKGROUND_MULTIPLE * float(studies[t]["seg"]["background"]["suvmean"])) for t in tracers}
    mips = mip_figure(studies, tracers, centroids, vmax, names)
    if mip_png:
        from dualpet.io import atomic_path

        with atomic_path(mip_png) as tmp:
            tmp.write_bytes(base64.b64decode(mips.split(",", 1)[1]))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dualpet review: patient {html.escape(patient)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f3f3f3}"
        "pre{background:#f7f7f7;padding:4px;font-size:11px;white-space:pre-wrap}img{max-width:100%}</style></head><body>",
        f"<h1>Review: patient {html.escape(patient)}</h1>",
        "<p>Lesions are numbered as in <code>lesions.tsv</code> (the VOI outlined in blue is the one measured). "
        "To change the result, copy the line under a lesion or candidate into the review sheet "
        "(<code>config review</code>), fill in <code>decision</code> (accept, reject, add), your name and a note, and rerun: "
        "only this patient's jobs and the cohort's rerun. Positions are in that tracer's study (LPS mm), so a "
        "decision keeps its meaning when lesions are renumbered. A new sheet starts with this header line:</p>",
        f"<pre>{html.escape(chr(9).join(REVIEW_COLUMNS))}</pre>",
        f"<div style='overflow-x:auto'><img alt='MIPs' style='max-width:none' src='{mips}'></div>",  # at full size
        "<h2>Lesions</h2><table><tr><th>lesion</th><th>region</th>"
        + "".join(f"<th>{html.escape(t)}</th>" for t in tracers) + "</tr>",
    ]
    for row in lesions.to_dict("records"):
        lesion = row["lesion"]
        cells = []
        centres = {t: centroids[t].get(voi_label(lesion)) for t in tracers}
        for t in tracers:
            st = studies[t]
            det = int(row.get(f"{t}_detected", 0) or 0)
            how = next((str(v) for v in (row.get(f"{t}_origin"), row.get(f"{t}_voi_source")) if _present(v)), "")
            text = (f"detected: {'yes' if det else 'no'}{f' ({html.escape(how)})' if how else ''}"
                    f"<br>SUVmax {_fmt(row.get(f'{t}_suvmax'))}, TBR {_fmt(row.get(f'{t}_tbr'))}")  # fmt: skip
            if centres[t] is not None:
                lps = apply_affine(st["affine"], centres[t])
                decision = "reject" if det else "add"
                text += f"<pre>{html.escape(review_row(patient, t, lps, decision, lesion))}</pre>"
            cells.append(text)
        parts.append(f"<tr><td><b>{html.escape(lesion)}</b></td><td>{html.escape(str(row.get('region', '')))}</td>"
                     + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")  # fmt: skip
        parts.append(f"<tr><td colspan='{2 + len(tracers)}'><img alt='{html.escape(lesion)}' "
                     f"src='{crop_figure(studies, tracers, centres, lesion)}'></td></tr>")  # fmt: skip
    parts.append("</table>")
    parts.append("<h2>Candidates not counted as lesions</h2><table><tr><th>tracer</th><th>position (LPS mm)</th>"
                 "<th>SUVmax</th><th>reason</th><th>review line to accept it</th></tr>")  # fmt: skip
    for t in tracers:
        for cand in studies[t]["seg"]["detection"].get("rejected", []):
            lps = cand.get("peak_lps")
            if lps is None:
                continue
            parts.append(f"<tr><td>{html.escape(t)}</td><td>{', '.join(f'{v:.1f}' for v in lps)}</td>"
                         f"<td>{_fmt(cand.get('suvmax'))}</td><td>{html.escape(str(cand.get('reason', '')))}</td>"
                         f"<td><pre>{html.escape(review_row(patient, t, lps, 'accept'))}</pre></td></tr>")  # fmt: skip
    parts.append("</table>")
    reviews = [(t, r) for t in tracers for r in studies[t]["seg"]["detection"].get("review", [])]
    if reviews:
        parts.append("<h2>Reader decisions applied</h2><table><tr><th>tracer</th><th>decision</th><th>reader</th>"
                     "<th>note</th><th>outcome</th></tr>")  # fmt: skip
        for t, r in reviews:
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in
                                          (t, r.get("decision"), r.get("reader"), r.get("note"), r.get("applied"))) + "</tr>")  # fmt: skip
        parts.append("</table>")
    parts.append("</body></html>")
    write_text(out, "\n".join(parts))
