"""Review-page benchmark: a 40-lesion patient's page, its build time, size and first paint.

    python tests/benchmarks/bench_review_page.py [--lesions 40] [--candidates 30]
        [--workdir DIR] [--no-browser]

Builds one patient of clinical size on disk (CT 512 x 512 x 300 of 0.98 x 0.98 x 3.27 mm
with noisy soft tissue, lungs and a spine; PET 200 x 200 x 250 of 4 x 4 x 4 mm, noisy),
``--lesions`` spheres measured in both tracers (VOIs, lesions.tsv) and ``--candidates``
rejected candidates, then writes its review page with :func:`write_review_page` exactly as
the workflow does and prints:

- the page's build time (wall and CPU seconds) and the process's peak RSS;
- the page's size and its number of pictures;
- in headless Chromium (Debian's chromium and chromium-driver, Selenium): first paint and
  first contentful paint (the Paint Timing API), the load event, and whether every picture
  decoded once scrolled into view.

The README's figure (issue 22: at most 2 s to first paint) comes from this script.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "tests"))

TRACERS = ("fdg", "pentixafor")
CT_SPACING, CT_SHAPE = (0.98, 0.98, 3.27), (512, 512, 300)
PET_SPACING, PET_SHAPE = (4.0, 4.0, 4.0), (200, 200, 250)


def _world(shape, spacing, origin):
    return [np.arange(n) * s + o for n, s, o in zip(shape, spacing, origin)]


def make_patient(work: Path, n_lesions: int, n_candidates: int, seed: int = 1):
    """Write both tracers' CT, PET, VOIs and detection records, and lesions.tsv."""
    import pandas as pd

    from dualpet.interchange import lesion_id, voi_label
    from dualpet.nifti import nifti_image, save_nifti

    rng = np.random.default_rng(seed)
    ct_origin = -(np.asarray(CT_SHAPE) - 1) / 2 * np.asarray(CT_SPACING)
    pet_origin = -(np.asarray(PET_SHAPE) - 1) / 2 * np.asarray(PET_SPACING)
    x, y, z = _world(CT_SHAPE, CT_SPACING, ct_origin)
    body = (x[:, None] / 170.0) ** 2 + (y[None, :] / 115.0) ** 2 <= 1.0
    lungs = (((np.abs(x[:, None]) - 75.0) / 55.0) ** 2 + ((y[None, :] + 5.0) / 70.0) ** 2) <= 1.0
    spine = (x[:, None] / 18.0) ** 2 + ((y[None, :] - 70.0) / 18.0) ** 2 <= 1.0
    plane = np.where(body, 40.0, -1000.0)
    ct = np.empty(CT_SHAPE, np.int16)
    for k, zk in enumerate(z):
        p = plane.copy()
        if zk > 0:
            p[lungs] = -850.0
        p[spine] = 450.0
        ct[:, :, k] = np.clip(p + rng.normal(0, 18, p.shape), -1024, 3000)
    px, py, pz = _world(PET_SHAPE, PET_SPACING, pet_origin)
    pet_body = ((px[:, None] / 170.0) ** 2 + (py[None, :] / 115.0) ** 2 <= 1.0)[:, :, None]
    studies = {}
    centres = np.column_stack(
        [rng.uniform(-120, 120, n_lesions), rng.uniform(-70, 60, n_lesions), rng.uniform(-400, 400, n_lesions)]
    )
    radii = rng.uniform(5.0, 15.0, n_lesions)
    grid = np.stack(np.meshgrid(px, py, pz, indexing="ij"), axis=-1)
    for t, level in zip(TRACERS, (1.6, 1.1)):
        suv = np.where(pet_body, level, 0.0) * rng.gamma(25.0, 1 / 25.0, PET_SHAPE)
        voi = np.zeros(PET_SHAPE, np.uint16)
        for n, (c, r) in enumerate(zip(centres, radii), start=1):
            sl = tuple(
                slice(max(int(np.searchsorted(a, v - r - 8)), 0), int(np.searchsorted(a, v + r + 8)))
                for a, v in zip((px, py, pz), c)
            )
            d = np.linalg.norm(grid[sl] - c, axis=-1)
            suv[sl] += level * rng.uniform(2.0, 8.0) * np.exp(-0.5 * (d / (0.6 * r)) ** 2)
            voi[sl][d <= r] = voi_label(lesion_id(n))
        d = work / t
        d.mkdir(parents=True, exist_ok=True)
        affine = np.diag([*PET_SPACING, 1.0])
        affine[:3, 3] = pet_origin
        ct_affine = np.diag([*CT_SPACING, 1.0])
        ct_affine[:3, 3] = ct_origin
        save_nifti(d / "pet_suv.nii.gz", nifti_image(suv.astype(np.float32), affine))
        save_nifti(d / "ct.nii.gz", nifti_image(ct, ct_affine))
        save_nifti(d / "voi.nii.gz", nifti_image(voi, affine))
        rejected = [
            {
                "suvmax": float(rng.uniform(3, 12)),
                "reason": "physiological: urine (bladder in the organ map)",
                "peak_lps": [float(v) for v in (rng.uniform(-100, 100), rng.uniform(-60, 60), rng.uniform(-400, 400))],
            }
            for _ in range(n_candidates // 2)
        ]
        seg = {
            "background": {"suvmean": level, "source": "bloodpool"},
            "detection": {"rejected": rejected, "review": []},
        }
        (d / "segmentation.json").write_text(json.dumps(seg))
        studies[t] = {
            "pet": d / "pet_suv.nii.gz",
            "ct": d / "ct.nii.gz",
            "voi": d / "voi.nii.gz",
            "segmentation": d / "segmentation.json",
        }
    rows = []
    for n, c in enumerate(centres, start=1):
        row = {"patient": "B001", "lesion": lesion_id(n), "x_mm": c[0], "y_mm": c[1], "z_mm": c[2], "region": "other"}
        for t in TRACERS:
            row.update(
                {
                    f"{t}_detected": 1,
                    f"{t}_origin": "automatic",
                    f"{t}_suvmax": float(rng.uniform(3, 15)),
                    f"{t}_tbr": float(rng.uniform(2, 8)),
                }
            )
        rows.append(row)
    pd.DataFrame(rows).to_csv(work / "lesions.tsv", sep="\t", index=False)
    return studies


def browser_figures(page: Path) -> dict:
    """First paint, first contentful paint and load (ms) of the page in headless Chromium,
    and the pictures decoded after scrolling through it."""
    from report_check import _driver

    driver = _driver()
    try:
        driver.get(page.resolve().as_uri())
        paint = dict(
            driver.execute_script("return performance.getEntriesByType('paint').map(e => [e.name, e.startTime]);")
        )
        load = driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd;")
        driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            done = driver.execute_script(
                "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;"
            )
            total = driver.execute_script("return document.images.length;")
            if done == total:
                break
            time.sleep(0.2)
        return {
            "first_paint_ms": paint.get("first-paint"),
            "first_contentful_paint_ms": paint.get("first-contentful-paint"),
            "load_ms": load,
            "images_decoded": done,
            "images": total,
        }
    finally:
        driver.quit()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lesions", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-browser", action="store_true")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="dualpet-review-bench-"))
    studies = make_patient(work, a.lesions, a.candidates)
    from dualpet.reviewpage import write_review_page

    t0, c0 = time.perf_counter(), time.process_time()
    write_review_page(work / "review.html", "B001", TRACERS, work / "lesions.tsv", studies)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    page = work / "review.html"
    print(f"review page, {a.lesions} lesions and {a.candidates} rejected candidates (CT {CT_SHAPE}, PET {PET_SHAPE}):")
    print(f"  build: {wall:.1f} s wall, {cpu:.1f} s CPU; peak RSS {peak_mb:.0f} MB (the benchmark's process)")
    print(f"  page: {page.stat().st_size / 1e6:.1f} MB, {page.read_text().count('<img ')} pictures")
    if not a.no_browser:
        f = browser_figures(page)
        print(
            f"  Chromium (headless): first paint {f['first_paint_ms']:.0f} ms, first contentful paint "
            f"{f['first_contentful_paint_ms']:.0f} ms, load event {f['load_ms']:.0f} ms; "
            f"{f['images_decoded']} of {f['images']} pictures decoded"
        )
    print(f"  ({page})")


if __name__ == "__main__":
    main()
