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

#: A tracer's SUV scale on the page (its MIPs and every view, fixed for the page and stated
#: on the colour bars): 0 to SUV_SCALE_BACKGROUND_MULTIPLE x the study's background SUVmean,
#: rounded up to 0.5, at least SUV_SCALE_MIN; SUV_SCALE_NO_BACKGROUND without a background.
SUV_SCALE_BACKGROUND_MULTIPLE, SUV_SCALE_MIN, SUV_SCALE_NO_BACKGROUND = 5.0, 5.0, 10.0


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", pad_inches=0.02)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _study(pet_path, ct_path, voi_path, seg_path):
    """A tracer's study for the page: its PET (SUV), its CT on its own grid (the views
    sample it at CT resolution), the VOI labels and the detection record."""
    from dualpet.geometry import lps_affine
    from dualpet.interchange import read_segmentation
    from dualpet.nifti import as_stored, load_nifti

    pet = load_nifti(pet_path)
    ct = load_nifti(ct_path)
    voi, _ = read_voi(voi_path)
    return {
        "suv": np.asarray(pet.dataobj, dtype=np.float32),
        "affine": lps_affine(pet.affine),
        "ct": as_stored(ct),
        "ct_affine": lps_affine(ct.affine),
        "voi": voi,
        "seg": read_segmentation(seg_path)["record"],
    }


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


def mip_figure(studies, tracers, centroids, vmax, lesion_ids, names=None):
    """Coronal and sagittal MIPs of both tracers in millimetres, MIP_VIEW_PX tall, lesions
    labelled in a margin beside each view with leader lines to their VOI centroids
    (``centroids``: tracer -> VOI label -> voxel; ``lesion_ids``: VOI label -> lesion ID;
    ``names``: tracer -> display name)."""
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
        ax.imshow(
            _display(mip, axis, st["affine"]),
            cmap="gray_r",
            vmin=0,
            vmax=vmax[t],
            aspect=sp[2] / sp[axis],
            interpolation="nearest",
        )
        points = [
            (lesion_ids.get(label, lesion_id(label)), *_to_display(st["affine"], axis, ijk[axis], ijk[2], shape))
            for label, ijk in centroids[t].items()
        ]
        rows_per_px = shape[2] / MIP_VIEW_PX
        pad = 4 * rows_per_px * sp[2] / sp[axis]  # 4 px, in columns
        for side in ("left", "right"):  # each lesion labelled in the margin on its own side
            mine = [p for p in points if (p[1] < shape[axis] / 2.0) == (side == "left")]
            ys = _stack([r for _, _, r in mine], LABEL_GAP_PX * rows_per_px, 0.0, shape[2] - 1.0)
            x = -0.5 - pad if side == "left" else shape[axis] - 0.5 + pad
            for (lesion, c, r), y in zip(mine, ys):
                ax.annotate(
                    lesion,
                    (c, r),
                    xytext=(x, y),
                    textcoords="data",
                    color="#d62728",
                    fontsize=8,
                    weight="bold",
                    va="center",
                    ha="right" if side == "left" else "left",
                    annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#d62728", "lw": 0.6, "shrinkA": 0, "shrinkB": 2},
                )
        ax.set_title(f"{(names or {}).get(t, t)}: {view} MIP (SUV 0-{vmax[t]:g})", fontsize=10)
        ax.axis("off")
    return _png(fig)


def _centroid_voxels(voi):
    """VOI label -> its centroid voxel (rounded), each from its own box (exact integer sums
    of the voxel indices, as ``ndimage.center_of_mass`` gives; it and ``np.unique`` each
    passed over the whole grid, 2.6 s for a clinical patient's two VOI maps)."""
    from scipy import ndimage

    out = {}
    voi = voi if voi.dtype.kind in "iu" else voi.astype(np.int64)
    for lab, box in enumerate(ndimage.find_objects(voi), start=1):
        if box is not None:
            ijk = np.nonzero(voi[box] == lab)
            n = len(ijk[0])
            out[lab] = tuple(int(round((int(i.sum()) + n * b.start) / n)) for i, b in zip(ijk, box))
    return out


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
    values = {
        "patient": patient,
        "tracer": tracer,
        "decision": decision,
        "lesion": lesion,
        **{axis: f"{v:.1f}" for axis, v in zip("xyz", lps)},
    }
    return "\t".join(values.get(col, "") for col in REVIEW_COLUMNS)


def suv_scale(seg):
    """The upper end of a study's SUV scale on the page (see SUV_SCALE_BACKGROUND_MULTIPLE)."""
    bg = (seg.get("background") or {}).get("suvmean")
    if not _present(bg):
        return SUV_SCALE_NO_BACKGROUND
    return max(SUV_SCALE_MIN, float(np.ceil(2.0 * SUV_SCALE_BACKGROUND_MULTIPLE * float(bg)) / 2.0))


def _picture(blocks):
    from dualpet.lesionviews import data_uri, lesion_picture

    return data_uri(lesion_picture(blocks))


def _img(src, alt):
    return f"<div class='pic'><img alt='{html.escape(alt)}' loading='lazy' decoding='async' src='{src}'></div>"


def _lesion_blocks(studies, tracers, names, row, scale, peaks):
    """The lesion's views per tracer (see :func:`dualpet.lesionviews.lesion_picture`):
    through its SUVmax in each study (``peaks``: tracer -> LPS or None), one field of view for
    both, the region's window."""
    from dualpet.lesionviews import view_mm, voi_extent_mm, window_for

    label = voi_label(row["lesion"])
    fov = view_mm(max(voi_extent_mm(studies[t], label) for t in tracers))
    window = window_for(str(row.get("region", "")))
    blocks = []
    for t in tracers:
        det = int(row.get(f"{t}_detected", 0) or 0)
        caption = f"{names[t]}: {'detected' if det else 'not detected'}, SUVmax {_fmt(row.get(f'{t}_suvmax')) or '-'}"
        centre = peaks[t]
        if centre is None:
            blocks.append({"caption": caption, "note": "no VOI in this study (the lesion lies outside its PET)"})
        else:
            blocks.append(
                {
                    "caption": caption + " (views through it)",
                    "study": studies[t],
                    "centre": centre,
                    "fov_mm": fov,
                    "window": window,
                    "suv_max": scale[t],
                    "voi_label": label,
                }
            )
    return blocks


def _candidate_blocks(studies, tracers, names, tracer, lps, scale, transform):
    """A rejected candidate's views: at its peak in its own study (marked by a cross) and,
    with the registration at hand, at the same anatomy in the other study."""
    from dualpet.lesionviews import VIEW_MM, window_for
    from dualpet.matching import region_label

    st = studies[tracer]
    window = window_for(region_label(st["ct"], st["ct_affine"], lps))
    blocks = []
    for t in tracers:
        if t == tracer:
            blocks.append(
                {
                    "caption": f"{names[t]}: the candidate's peak (cross)",
                    "study": st,
                    "centre": lps,
                    "fov_mm": VIEW_MM,
                    "window": window,
                    "suv_max": scale[t],
                }
            )
        elif transform is None:
            blocks.append({"caption": f"{names[t]}", "note": "no registration at hand"})
        else:
            from dualpet.registration import inverse_transform_points, transform_points

            to_other = transform_points if tracer == tracers[0] else inverse_transform_points
            there = to_other(transform, np.asarray([lps], float))[0]
            blocks.append(
                {
                    "caption": f"{names[t]}: the same position (registered)",
                    "study": studies[t],
                    "centre": there,
                    "fov_mm": VIEW_MM,
                    "window": window,
                    "suv_max": scale[t],
                }
            )
    return blocks


STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1280px}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f3f3f3}"
    "pre{background:#f7f7f7;padding:4px;font-size:11px;white-space:pre-wrap;margin:2px 0}"
    ".pic{overflow-x:auto}.pic img{max-width:none;display:block}"
)


def write_review_page(out, patient, tracers, lesions_tsv, studies_paths, mip_png=None, transform=None, names=None):
    """Write the patient's review page. ``studies_paths``: tracer -> dict with ``pet``,
    ``ct``, ``voi`` and ``segmentation`` paths. ``mip_png``: also write the page's MIP panel
    there (the Snakemake report's per-patient picture). ``transform``: the registration
    (reference -> index; its file), to show rejected candidates in the other study too.
    ``names``: tracer -> display name."""
    from dualpet.interchange import read_table
    from dualpet.io import write_text

    names = {t: (names or {}).get(t) or t for t in tracers}
    if transform is not None:
        from dualpet.registration import load_transform

        transform = load_transform(transform)
    lesions = read_table(lesions_tsv)
    studies = {t: _study(p["pet"], p["ct"], p["voi"], p["segmentation"]) for t, p in studies_paths.items()}
    centroids = {t: _centroid_voxels(studies[t]["voi"]) for t in tracers}
    labels = {voi_label(les): les for les in lesions["lesion"]}
    scale = {t: suv_scale(studies[t]["seg"]) for t in tracers}
    mips = mip_figure(studies, tracers, centroids, scale, labels, names)
    if mip_png:
        _write_data_uri(mip_png, mips)
    parts = _page_head(patient, tracers, names, scale, mips, len(lesions))
    parts += _lesion_rows(patient, tracers, names, lesions, studies, scale)
    parts += _candidate_rows(patient, tracers, names, studies, scale, transform)
    parts += _reader_decisions(tracers, names, studies)
    parts.append("</body></html>")
    write_text(out, "\n".join(parts))


def _write_data_uri(path, uri):
    """Write the picture of a base64 ``data:`` URI to ``path`` (atomically)."""
    from dualpet.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(base64.b64decode(uri.split(",", 1)[1]))


def _page_head(patient, tracers, names, scale, mips, n_lesions):
    """The page up to the lesion table's header row: title, instructions, the MIPs."""
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dualpet review: patient {html.escape(patient)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Review: patient {html.escape(patient)}</h1>",
        "<p>Lesions are numbered as in <code>lesions.tsv</code>. Each lesion is shown in both studies side by side: "
        "axial, coronal and sagittal views through its SUVmax in that study, as CT (at CT resolution, in a window "
        "for its region), PET and fusion, with the VOI that was measured outlined in cyan, a 20 mm scale bar and "
        "the SUV scale on the colour bar ("
        + ", ".join(f"{html.escape(names[t])} 0-{scale[t]:g}" for t in tracers)
        + ", the same for every view and the MIPs). "
        "To change the result, copy the line under a lesion or candidate into the review sheet "
        "(<code>config review</code>), fill in <code>decision</code> (accept, reject, add), your name and a note, and rerun: "
        "only this patient's jobs and the cohort's rerun. Positions are in that tracer's study (LPS mm), so a "
        "decision keeps its meaning when lesions are renumbered. A new sheet starts with this header line:</p>",
        f"<pre>{html.escape(chr(9).join(REVIEW_COLUMNS))}</pre>",
        f"<div class='pic'><img alt='MIPs' src='{mips}'></div>",  # at full size
        f"<h2>Lesions ({n_lesions})</h2><table><tr><th>lesion</th><th>region</th>"
        + "".join(f"<th>{html.escape(names[t])}</th>" for t in tracers)
        + "</tr>",
    ]


def _lesion_rows(patient, tracers, names, lesions, studies, scale):
    """The lesion table's rows: per lesion its cells and its views; the table closed."""
    from dualpet.lesionviews import peak_point

    parts = []
    for row in lesions.to_dict("records"):
        lesion = row["lesion"]
        peaks = {t: peak_point(studies[t], voi_label(lesion)) for t in tracers}
        cells = [_lesion_cell(patient, t, row, peaks[t]) for t in tracers]
        parts.append(
            f"<tr id='{html.escape(lesion)}'><td><b>{html.escape(lesion)}</b></td>"
            f"<td>{html.escape(str(row.get('region', '')))}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
        pic = _picture(_lesion_blocks(studies, tracers, names, row, scale, peaks))
        parts.append(f"<tr><td colspan='{2 + len(tracers)}'>{_img(pic, lesion)}</td></tr>")
    parts.append("</table>")
    return parts


def _lesion_cell(patient, t, row, peak):
    """A lesion's cell for one tracer: detected and how, SUVmax, TBR, its review line."""
    det = int(row.get(f"{t}_detected", 0) or 0)
    how = next((str(v) for v in (row.get(f"{t}_origin"), row.get(f"{t}_voi_source")) if _present(v)), "")
    text = (
        f"detected: {'yes' if det else 'no'}{f' ({html.escape(how)})' if how else ''}"
        f"<br>SUVmax {_fmt(row.get(f'{t}_suvmax'))}, TBR {_fmt(row.get(f'{t}_tbr'))}"
    )
    if peak is not None:
        text += f"<pre>{html.escape(review_row(patient, t, peak, 'reject' if det else 'add', row['lesion']))}</pre>"
    return text


def _candidate_rows(patient, tracers, names, studies, scale, transform):
    """The section of candidates detection rejected: reason, views and accepting line each."""
    rejected = [
        (t, c) for t in tracers for c in studies[t]["seg"]["detection"].get("rejected", []) if c.get("peak_lps")
    ]
    parts = [
        f"<h2>Candidates not counted as lesions ({len(rejected)})</h2>"
        "<p>Each with its reason, views at its peak (a cross marks it) and in the other study at the same "
        "position, and the line that accepts it.</p><table><tr><th>tracer</th><th>peak (LPS mm)</th>"
        "<th>SUVmax</th><th>reason</th><th>review line to accept it</th></tr>"
    ]
    for n, (t, cand) in enumerate(rejected, start=1):
        lps = [float(v) for v in cand["peak_lps"]]
        parts.append(
            f"<tr id='C{n}'><td>{html.escape(names[t])}</td><td>{', '.join(f'{v:.1f}' for v in lps)}</td>"
            f"<td>{_fmt(cand.get('suvmax'))}</td><td>{html.escape(str(cand.get('reason', '')))}</td>"
            f"<td><pre>{html.escape(review_row(patient, t, lps, 'accept'))}</pre></td></tr>"
        )
        pic = _picture(_candidate_blocks(studies, tracers, names, t, lps, scale, transform))
        parts.append(f"<tr><td colspan='5'>{_img(pic, f'candidate {n}')}</td></tr>")
    parts.append("</table>")
    return parts


def _reader_decisions(tracers, names, studies):
    """The table of reader decisions applied (nothing without any)."""
    reviews = [(t, r) for t in tracers for r in studies[t]["seg"]["detection"].get("review", [])]
    if not reviews:
        return []
    parts = [
        "<h2>Reader decisions applied</h2><table><tr><th>tracer</th><th>decision</th><th>reader</th>"
        "<th>note</th><th>outcome</th></tr>"
    ]
    for t, r in reviews:
        parts.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_text(v))}</td>"
                for v in (names[t], r.get("decision"), r.get("reader"), r.get("note"), r.get("applied"))
            )
            + "</tr>"
        )
    parts.append("</table>")
    return parts


def _text(v):
    """A cell's text: empty for a missing value (never nan or None)."""
    return str(v) if _present(v) else ""
