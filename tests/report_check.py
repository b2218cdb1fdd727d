"""Open the Snakemake report and the review pages in a real headless browser and check what a reader sees.

    python tests/report_check.py results/report.html [--shots results/report_check]
        [--pages results/*/review.html ...]

(``make report-check`` builds the demo's report, runs one clinical-size generated patient
and runs this on both.) Chromium is driven by Selenium.

The report: its own app (``app.setView``, what its view buttons call) shows each page, and
the check looks at what the browser rendered: every figure decoded (an image with a
non-zero natural size), the statistics and table pages with their tables and headings
inside their frames, each category in the navigation, no error in the browser's console.

Each page given with ``--pages`` (the review pages) is opened on its own: it renders with
its heading and tables, every picture decodes once scrolled to, no text on it reads
``nan`` or ``None``, nothing is logged to the console as an error; its first paint (Paint
Timing API) is printed.

A screenshot of every page checked is written to ``--shots`` for a human look (review
pages: the top, the first lesion and the first rejected candidate). Exit status 0 when
everything is there, else 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

#: Pages that must be in the report: (suffix of the result's path, kind, what must show).
REQUIRED = [
    ("cohort/summary.html", "html", ["Primary endpoint", "Lesion-level detection", "geometric mean ratio", "Methods"]),
    ("cohort/tables.html", "html", ["patients.tsv", "lesions.tsv"]),
    ("cohort/figures/paired.png", "img", []),
    ("cohort/figures/patient_ratios.png", "img", []),
    ("cohort/figures/bland_altman.png", "img", []),
    ("cohort/figures/detection_by_region.png", "img", []),
    ("/mip.png", "img", []),
    ("/review.html", "html", ["Review: patient", "Lesions"]),
    ("registration/qc.png", "img", []),
]
CATEGORIES = ["Cohort statistics", "Cohort tables", "Cohort figures", "Patients", "Review pages"]


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser:
        options.binary_location = browser
    driver_path = shutil.which("chromedriver")
    if not (browser and driver_path):
        sys.exit("report_check: needs chromium and its driver (Debian: apt install chromium chromium-driver)")
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _wait(driver, script, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    return None


def check(report: Path, shots: Path | None) -> list[str]:
    from selenium.webdriver.common.by import By

    problems = []
    driver = _driver()
    try:
        driver.get(report.resolve().as_uri())
        if not _wait(driver, "return typeof app !== 'undefined' && typeof results !== 'undefined';"):
            return ["the report's app did not start (no `app` after 30 s)"]
        paths = driver.execute_script("return Object.keys(results);")
        have = driver.execute_script("return Object.keys(categories);")
        problems += [f"category {c!r} missing (has: {', '.join(have)})" for c in CATEGORIES if c not in have]
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
        for suffix, kind, texts in REQUIRED:
            path = next((p for p in sorted(paths) if p.endswith(suffix)), None)
            if path is None:
                problems.append(f"{suffix}: not in the report")
                continue
            driver.execute_script(
                "app.setView({content: arguments[1], contentPath: results[arguments[0]].data_uri, resultPath: arguments[0]});",
                path,
                kind,
            )
            if kind == "img":
                size = _wait(
                    driver,
                    "const i = document.querySelector('.p-3 img');"
                    "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null;",
                )
                if not size:
                    problems.append(f"{path}: the image did not render")
            else:
                if not _wait(driver, "return document.querySelector('iframe') !== null;"):
                    problems.append(f"{path}: no frame shown")
                    continue
                driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
                body = (
                    _wait(
                        driver,
                        "return document.body && document.body.innerText.length > 0 ? document.body.innerText : null;",
                    )
                    or ""
                )
                n_tables = driver.execute_script("return document.querySelectorAll('table').length;")
                driver.switch_to.default_content()
                if n_tables == 0:
                    problems.append(f"{path}: no table rendered")
                problems += [f"{path}: {t!r} not shown" for t in texts if t not in body]
            if shots:
                driver.save_screenshot(str(shots / (path.replace("/", "_") + ".png")))
        severe = [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        problems += [f"browser console: {m[:200]}" for m in severe]
    finally:
        driver.quit()
    return problems


#: Words a missing value turns into when printed raw.
MISSING_WORDS = re.compile(r"\b(nan|NaN|None|undefined)\b")


def check_pages(pages: list[Path], shots: Path | None, driver=None) -> tuple[list[str], list[str]]:
    """Each HTML page (a review page) on its own: (problems, one line of figures per page)."""
    problems, figures = [], []
    own = driver is None
    driver = driver or _driver()
    try:
        for page in pages:
            name = "_".join([*page.resolve().parts[-4:-1], page.stem])  # e.g. clinical_results_P001_review
            driver.get(page.resolve().as_uri())
            if not _wait(driver, "return document.readyState === 'complete';"):
                problems.append(f"{page}: did not finish loading in 30 s")
                continue
            paint = dict(
                driver.execute_script("return performance.getEntriesByType('paint').map(e => [e.name, e.startTime]);")
            )
            heading = driver.execute_script("const h = document.querySelector('h1'); return h ? h.innerText : '';")
            if not heading:
                problems.append(f"{page}: no heading rendered")
            n_tables = driver.execute_script("return document.querySelectorAll('table').length;")
            if n_tables == 0:
                problems.append(f"{page}: no table rendered")
            driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
            total = driver.execute_script("return document.images.length;")
            done = _wait(
                driver,
                "const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;"
                "return ok === document.images.length ? ok : null;",
                timeout=60.0,
            )
            if done is None:
                bad = driver.execute_script(
                    "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);"
                )
                problems.append(f"{page}: {len(bad)} of {total} pictures did not decode ({', '.join(bad[:5])})")
            text = driver.execute_script("return document.body.innerText;")
            words = sorted({m.group(0) for m in MISSING_WORDS.finditer(text)})
            if words:
                where = next(line for line in text.splitlines() if MISSING_WORDS.search(line))
                problems.append(f"{page}: text reads {', '.join(words)} (first: {where.strip()[:120]!r})")
            severe = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            problems += [f"{page}: browser console: {m[:200]}" for m in severe]
            figures.append(
                f"{page}: first paint {paint.get('first-paint', float('nan')):.0f} ms, {total} pictures, "
                f"{page.stat().st_size / 1e6:.1f} MB"
            )
            if shots:
                shots.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(shots / f"{name}_top.png"))
                for what, selector in (("lesion", "img[alt^='L']"), ("candidate", "img[alt^='candidate']")):
                    if driver.execute_script(
                        f'const i = document.querySelector("{selector}");'
                        "if (i) { i.scrollIntoView(); return true; } return false;"
                    ):
                        driver.save_screenshot(str(shots / f"{name}_{what}.png"))
    finally:
        if own:
            driver.quit()
    return problems, figures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, nargs="?", help="the Snakemake report (results/report.html)")
    ap.add_argument("--shots", type=Path, default=None, help="folder for a screenshot of every page checked")
    ap.add_argument("--pages", type=Path, nargs="*", default=[], help="HTML pages checked on their own (review pages)")
    a = ap.parse_args(argv)
    if not a.report and not a.pages:
        ap.error("give the report, --pages, or both")
    problems = check(a.report, a.shots) if a.report else []
    page_problems, figures = check_pages(a.pages, a.shots) if a.pages else ([], [])
    problems += page_problems
    for line in figures:
        print(f"report_check: {line}")
    for p in problems:
        print(f"report_check: {p}", file=sys.stderr)
    if not problems:
        if a.report:
            print(
                f"report_check: {a.report}: {len(REQUIRED)} pages and {len(CATEGORIES)} categories render in Chromium"
            )
        if a.pages:
            print(f"report_check: {len(a.pages)} review page(s) render, every picture decodes, no nan or None")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
