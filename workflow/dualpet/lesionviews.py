"""Per-lesion views for the review page: what a reader needs to judge one lesion.

For each tracer, axial, coronal and sagittal planes through a point (the lesion's SUVmax
in that tracer's study), each shown as CT, PET and fusion:

- the CT sampled from its own grid at a display pixel finer than its voxels (never the
  PET's grid), in a window that suits the region: lung, bone or soft tissue;
- the PET on a fixed SUV scale per tracer, stated on a colour bar with numbers (inverted
  grey alone, the 'hot' map over the CT in the fusion);
- the VOI outlined, or the candidate's peak marked by a cross when there is no VOI;
- a millimetre scale bar.

The planes are sampled in patient space (LPS, mm), so every view keeps its physical
proportions whatever the voxel sizes, and both tracers' blocks sit side by side. Drawn
with numpy, SciPy and Pillow (no matplotlib figure per lesion: fast enough for 40 lesions
and their rejected candidates) and embedded as JPEG: the page stays small enough to paint
at once.
"""

from __future__ import annotations

import base64
import io
from functools import cache

import numpy as np

from dualpet.geometry import world_to_voxel

#: Field of view (mm) of each view: at least VIEW_MM, or VIEW_LESION_FACTOR x the lesion's
#: largest extent for a large one (rounded up to 20 mm), drawn TILE_PX square: at 80 mm a
#: display pixel is 0.5 mm, finer than clinical CT voxels (the CT is never coarsened).
VIEW_MM, VIEW_LESION_FACTOR, TILE_PX = 80.0, 2.0, 160
#: CT windows (lowest, highest HU) by region: lung (W 1500, L -600), bone (W 1800, L 400),
#: soft tissue (W 400, L 40) for everything else.
CT_WINDOWS = {"lung": (-1350.0, 150.0), "bone": (-500.0, 1300.0), "soft tissue": (-160.0, 240.0)}
#: The fusion: the PET over the CT at up to FUSION_ALPHA opacity, fading in between the
#: FUSION_FADE fractions of the SUV scale (the scale's top is 5 x background on the page:
#: background tissue at 0.2 stays mostly CT, twice background and more is fully coloured).
FUSION_ALPHA, FUSION_FADE = 0.65, (0.1, 0.4)
#: The VOI outline and the candidate cross (cyan: seen on grey CT and on the hot map).
OUTLINE_RGB = (0, 200, 255)
#: Length of the scale bar (mm).
SCALE_BAR_MM = 20.0
#: Display planes: name -> (LPS axis down the rows, its sign, LPS axis along the columns).
#: Axial: anterior up, the patient's right on the viewer's left; coronal: superior up, right
#: on the left; sagittal: superior up, anterior on the left (radiological convention).
PLANES = {"axial": (1, 1.0, 0), "coronal": (2, -1.0, 0), "sagittal": (2, -1.0, 1)}
#: Sizes of the layout (pixels): gaps between tiles and between blocks, the block's caption
#: and its column names above the tiles, the plane names' width on the left, and the colour
#: bar's strip and width with its numbers.
GAP, BLOCK_GAP, CAPTION_PX, HEADER_PX, LABEL_PX, BAR_STRIP, BAR_PX = 3, 14, 18, 15, 62, 12, 58
JPEG_QUALITY = 90


def window_for(region):
    """The CT window's name for a lesion's region (``lesions.tsv`` 'region')."""
    return region if region in ("lung", "bone") else "soft tissue"


def view_mm(extent_mm=0.0):
    """Field of view (mm) for a lesion of this largest extent."""
    wanted = max(VIEW_MM, VIEW_LESION_FACTOR * float(extent_mm))
    return float(np.ceil(wanted / 20.0) * 20.0)


def plane_points(centre_lps, plane, fov_mm, n=TILE_PX):
    """LPS points (n, n, 3) of a display plane through ``centre_lps``: row 0 at the top,
    column 0 on the left (see PLANES); pixel centres ``fov_mm / n`` apart."""
    row_axis, row_sign, col_axis = PLANES[plane]
    t = ((np.arange(n) + 0.5) / n - 0.5) * fov_mm
    pts = np.tile(np.asarray(centre_lps, float), (n, n, 1))
    pts[..., row_axis] += row_sign * t[:, None]
    pts[..., col_axis] += t[None, :]
    return pts


def sample(volume, affine, points, order=1, outside=0.0):
    """``volume`` (voxel -> LPS ``affine``) at LPS ``points`` (..., 3): linear (order 1) or
    nearest (order 0); ``outside`` beyond the volume."""
    from scipy import ndimage

    vox = world_to_voxel(affine, points.reshape(-1, 3)).T
    out = ndimage.map_coordinates(
        volume, vox, order=order, mode="constant", cval=outside, output=np.float32, prefilter=False
    )
    return out.reshape(points.shape[:-1])


def _grey(img, lo, hi):
    return np.clip((np.asarray(img, np.float32) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def hot(g):
    """The 'hot' colour map on values in [0, 1] (black, red, yellow, white), RGB in [0, 1]."""
    return np.stack([np.clip(3 * g, 0, 1), np.clip(3 * g - 1, 0, 1), np.clip(3 * g - 2, 0, 1)], axis=-1)


def _outline(mask):
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def _cross(n, gap=6, arm=14):
    """A cross around the tile's centre, open in the middle (the peak stays visible)."""
    m = np.zeros((n, n), bool)
    c = n // 2
    for a, b in ((c - gap - arm, c - gap), (c + gap, c + gap + arm)):
        m[c, max(a, 0) : b] = True
        m[max(a, 0) : b, c] = True
    return m


def _rgb(g):
    return np.repeat(np.asarray(g, np.float32)[..., None], 3, axis=-1)


def view_tiles(study, centre_lps, plane, fov_mm, window, suv_max, voi_label=None):
    """Three RGB tiles (uint8, TILE_PX square) of one plane: CT, PET, fusion.

    ``study``: ``suv`` and ``affine`` (PET), ``ct`` and ``ct_affine`` (the CT on its own
    grid), ``voi`` (VOI labels on the PET grid) or None. ``voi_label``: outline that VOI;
    None marks the centre with a cross instead.
    """
    pts = plane_points(centre_lps, plane, fov_mm)
    ct = _grey(sample(study["ct"], study["ct_affine"], pts, 1, -1024.0), *CT_WINDOWS[window])
    g = _grey(sample(study["suv"], study["affine"], pts, 1, 0.0), 0.0, suv_max)
    lo, hi = FUSION_FADE
    alpha = (FUSION_ALPHA * np.clip((g - lo) / (hi - lo), 0.0, 1.0))[..., None]
    fusion = (1.0 - alpha) * _rgb(ct) + alpha * hot(g)
    if voi_label is not None and study.get("voi") is not None:
        mark = _outline(sample(study["voi"], study["affine"], pts, 0, 0.0) == voi_label)
    else:
        mark = _cross(TILE_PX)
    tiles = []
    for img in (_rgb(ct), _rgb(1.0 - g), fusion):
        tile = (img * 255.0 + 0.5).astype(np.uint8)
        tile[mark] = OUTLINE_RGB
        tiles.append(tile)
    return tiles


def _voi_box(study, label):
    """The VOI's bounding box (slices) in the study's PET grid, or None when it has no voxel.
    The boxes of all labels are found once per study (``study['boxes']``)."""
    from scipy import ndimage

    voi = study.get("voi")
    if voi is None or label < 1:
        return None
    if "boxes" not in study:
        study["boxes"] = ndimage.find_objects(voi)
    boxes = study["boxes"]
    return boxes[label - 1] if label <= len(boxes) else None


def peak_point(study, label):
    """LPS of the SUVmax inside VOI ``label`` of a study, or None when it has no voxel."""
    from dualpet.geometry import apply_affine

    box = _voi_box(study, label)
    if box is None:
        return None
    flat = np.where(study["voi"][box] == label, study["suv"][box], -np.inf)
    local = np.unravel_index(int(np.argmax(flat)), flat.shape)
    return apply_affine(study["affine"], [c + s.start for c, s in zip(local, box)])


def voi_extent_mm(study, label):
    """Largest extent (mm) of VOI ``label`` along the study's axes (0 when empty)."""
    from dualpet.geometry import voxel_spacing

    box = _voi_box(study, label)
    if box is None:
        return 0.0
    return float(np.max([s.stop - s.start for s in box] * voxel_spacing(study["affine"])))


@cache
def _font(size):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _scale_bar(draw, x0, y0, fov_mm):
    """A SCALE_BAR_MM bar in a tile's lower left corner (white with a dark edge)."""
    length = round(SCALE_BAR_MM / fov_mm * TILE_PX)
    x, y = x0 + 6, y0 + TILE_PX - 9
    draw.rectangle((x - 1, y - 2, x + length, y + 3), fill=(0, 0, 0))
    draw.rectangle((x, y - 1, x + length - 1, y + 2), fill=(255, 255, 255))
    draw.text(
        (x, y - 15), f"{SCALE_BAR_MM:g} mm", fill=(255, 255, 255), font=_font(10), stroke_width=1, stroke_fill=(0, 0, 0)
    )


def colour_bar(suv_max, height):
    """A colour bar (uint8 RGB, BAR_PX wide): the PET's inverted grey and the fusion's hot
    map side by side, SUV 0 at the bottom and ``suv_max`` at the top, with numbered ticks."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (BAR_PX, height), "white")
    top, bottom = 16, height - 8
    g = np.linspace(1.0, 0.0, bottom - top)[:, None]
    strip = np.concatenate([_rgb(np.repeat(1.0 - g, BAR_STRIP // 2, 1)), hot(np.repeat(g, BAR_STRIP // 2, 1))], axis=1)
    img.paste(Image.fromarray((strip * 255 + 0.5).astype(np.uint8)), (2, top))
    draw = ImageDraw.Draw(img)
    draw.rectangle((2, top, 2 + BAR_STRIP - 1, bottom - 1), outline=(0, 0, 0))
    draw.text((1, 1), "SUV", fill=(0, 0, 0), font=_font(11))
    for v in suv_ticks(suv_max):
        y = bottom - 1 - round(v / suv_max * (bottom - top - 1))
        draw.line((2 + BAR_STRIP, y, 5 + BAR_STRIP, y), fill=(0, 0, 0))
        draw.text((8 + BAR_STRIP, y - 6), f"{v:g}", fill=(0, 0, 0), font=_font(11))
    return np.asarray(img)


def suv_ticks(suv_max):
    """Round SUV ticks from 0 to ``suv_max`` (both ends included, 3-6 ticks)."""
    step = next(s for s in (0.5, 1, 2, 2.5, 5, 10, 20, 25, 50) if suv_max / s <= 5)
    ticks = list(np.arange(0.0, suv_max + 1e-9, step))
    if suv_max - ticks[-1] > 0.25 * step:
        ticks.append(round(float(suv_max), 1))
    elif ticks[-1] != suv_max:
        ticks[-1] = round(float(suv_max), 1)
    return [round(float(t), 1) for t in ticks]


def _block_width():
    return LABEL_PX + 3 * TILE_PX + 3 * GAP + BAR_PX


def layout(n_blocks):
    """Geometry of a picture of ``n_blocks`` tracer blocks: the tile at (block, plane row,
    column 0-2) has its top left corner at ``tile_origin(b, r, c)``; returns the picture's
    (width, height) and that function."""
    width = n_blocks * _block_width() + (n_blocks - 1) * BLOCK_GAP
    top = CAPTION_PX + HEADER_PX
    height = top + 3 * TILE_PX + 2 * GAP

    def tile_origin(b, r, c):
        return b * (_block_width() + BLOCK_GAP) + LABEL_PX + c * (TILE_PX + GAP), top + r * (TILE_PX + GAP)

    return (width, height), tile_origin


def lesion_picture(blocks):
    """One picture (RGB uint8 array) of tracer blocks side by side.

    ``blocks``: a list of dicts with ``caption``; and either ``study``, ``centre`` (LPS),
    ``fov_mm``, ``window``, ``suv_max`` and ``voi_label`` (None: a cross at the centre),
    or ``note`` (why there is no view, e.g. outside this PET).
    """
    from PIL import Image, ImageDraw

    (width, height), origin = layout(len(blocks))
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for b, block in enumerate(blocks):
        x0, _ = origin(b, 0, 0)
        draw.text((x0 - LABEL_PX, 2), block["caption"], fill=(0, 0, 0), font=_font(12))
        if block.get("study") is None:
            _, y = origin(b, 1, 0)
            draw.text((x0, y + TILE_PX // 2), block.get("note", ""), fill=(90, 90, 90), font=_font(12))
            continue
        for r, plane in enumerate(PLANES):
            tiles = view_tiles(
                block["study"],
                block["centre"],
                plane,
                block["fov_mm"],
                block["window"],
                block["suv_max"],
                block.get("voi_label"),
            )
            _, y = origin(b, r, 0)
            draw.text((x0 - LABEL_PX + 2, y + TILE_PX // 2 - 7), plane, fill=(0, 0, 0), font=_font(12))
            for c, tile in enumerate(tiles):
                canvas.paste(Image.fromarray(tile), origin(b, r, c))
            _scale_bar(draw, *origin(b, r, 0), block["fov_mm"])
        for c, name in enumerate((f"CT, {block['window']} window", "PET", "fusion")):
            x, y = origin(b, 0, c)
            draw.text((x + 1, y - HEADER_PX), name, fill=(0, 0, 0), font=_font(11))
        bar = colour_bar(block["suv_max"], 3 * TILE_PX + 2 * GAP)
        x, y = origin(b, 0, 2)
        canvas.paste(Image.fromarray(bar), (x + TILE_PX + GAP, y))
    return np.asarray(canvas)


def data_uri(rgb):
    """An RGB picture as an embeddable JPEG (``data:`` URI); chroma kept at full resolution
    so the thin outlines stay sharp."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
