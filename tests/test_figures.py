"""Cohort figures (dualpet.figures): the numbers behind each figure against independent
computations on a small hand-built cohort, the files written, reproducibility and inputs
with nothing to draw."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dualpet import figures

REF, IDX = "fdg", "pentixafor"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = [f"{name}.{ext}" for name in figures.FIGURES for ext in ("png", "svg")] + ["detection_by_region.tsv"]

# patient, lesion, region, fdg detected, pentixafor detected, fdg SUVmax, pentixafor SUVmax
ROWS = [
    ("A", "L01", "bone", 1, 1, 4.0, 8.0),  # ratio 2
    ("A", "L02", "liver", 1, 1, 10.0, 5.0),  # 0.5
    ("A", "L03", "lung", 1, 0, 6.0, 3.0),  # reference only
    ("A", "L04", "bone", 0, 1, 2.0, 6.0),  # index only
    ("B", "L01", "lymph node", 1, 1, 5.0, 5.0),  # 1
    ("B", "L02", "lymph node", 1, 1, 3.0, 4.5),  # 1.5
    ("B", "L03", "", 1, 1, 7.0, np.nan),  # no index value
    ("B", "L04", "other", 1, 1, 0.0, 2.0),  # reference value 0
    ("C", "L01", "liver", 1, 1, 8.0, 2.0),  # 0.25, C's only pair
    ("C", "L02", "lung", 0, 1, 1.0, 3.0),  # index only
    ("D", "L01", "bone", 1, 1, 5.0, 5.0),  # D is excluded
    ("D", "L02", "liver", 1, 0, 4.0, 2.0),
]


def lesions_table(rows=ROWS):
    cols = ["patient", "lesion", "region", f"{REF}_detected", f"{IDX}_detected", f"{REF}_suvmax", f"{IDX}_suvmax"]
    return pd.DataFrame(rows, columns=cols)


def patients_table(ids=("A", "B", "C", "D", "E"), excluded=("D",)):
    return pd.DataFrame(
        {
            "patient": list(ids),
            "status": ["excluded" if p in excluded else "included" for p in ids],
            "excluded_reason": [f"patient {p}, fdg: no PET series" if p in excluded else "" for p in ids],
        }
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    result = figures.write_figures(lesions_table(), patients_table(), REF, IDX, out)
    return out, result


def by_name(result):
    return {entry["name"]: entry for entry in result}


def svg_text(path):
    return open(path, encoding="utf-8").read()


# --------------------------------------------------------------------------- numbers


def test_excluded_patients_leave_with_their_lesions():
    kept, excluded, n = figures.included_lesions(lesions_table(), patients_table())
    assert excluded == ["D"] and n == 2
    assert sorted(kept["patient"].unique()) == ["A", "B", "C"]
    # status alone excludes too (case-insensitive), as in the statistics
    pts = pd.DataFrame({"patient": ["A", "B"], "status": ["Excluded", "included"]})
    assert figures.included_lesions(lesions_table(), pts)[1] == ["A"]


@pytest.mark.parametrize(
    "lesion_set, expected, not_in_set",
    [
        ("both", [("A", "L01"), ("A", "L02"), ("B", "L01"), ("B", "L02"), ("C", "L01")], 3),
        ("reference", [("A", "L01"), ("A", "L02"), ("A", "L03"), ("B", "L01"), ("B", "L02"), ("C", "L01")], 2),
        (
            "union",
            [
                ("A", "L01"),
                ("A", "L02"),
                ("A", "L03"),
                ("A", "L04"),
                ("B", "L01"),
                ("B", "L02"),
                ("C", "L01"),
                ("C", "L02"),
            ],
            0,
        ),
    ],
)
def test_lesion_sets_and_reasons(lesion_set, expected, not_in_set):
    kept, _, _ = figures.included_lesions(lesions_table(), patients_table())
    pairs, left_out = figures.paired_values(kept, REF, IDX, "suvmax", lesion_set)
    assert list(zip(pairs["patient"], pairs["lesion"])) == expected
    assert (pairs["reference"] > 0).all() and (pairs["index"] > 0).all()
    reasons = {d["reason"]: d["lesions"] for d in left_out}
    assert reasons.pop(f"SUVmax missing or not finite on {IDX}") == 1  # B L03
    assert reasons.pop(f"SUVmax <= 0 on {REF}") == 1  # B L04
    assert sum(reasons.values()) == not_in_set
    assert len(pairs) + sum(d["lesions"] for d in left_out) == len(kept)


def test_infinite_and_text_values_count_as_missing():
    rows = [
        ("A", "L01", "bone", 1, 1, np.inf, 2.0),
        ("A", "L02", "bone", 1, 1, "n/a", 2.0),
        ("A", "L03", "bone", 1, 1, 3.0, 2.0),
    ]
    pairs, left_out = figures.paired_values(lesions_table(rows), REF, IDX)
    assert list(pairs["lesion"]) == ["L03"]
    assert left_out == [{"reason": f"SUVmax missing or not finite on {REF}", "lesions": 2}]


def _independent_patient_ratio(ratios):
    logs = np.log(ratios)
    gmean = stats.gmean(ratios)
    if len(ratios) < 2:
        return gmean, None, None
    lo, hi = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    return gmean, math.exp(lo), math.exp(hi)


def test_patient_ratios_against_scipy():
    kept, _, _ = figures.included_lesions(lesions_table(), patients_table())
    pairs, _ = figures.paired_values(kept, REF, IDX)
    per = figures.patient_ratios(pairs).set_index("patient")
    hand = {"A": [2.0, 0.5], "B": [1.0, 1.5], "C": [0.25]}
    assert list(per.index) == ["A", "B", "C"]
    for patient, ratios in hand.items():
        gmean, lo, hi = _independent_patient_ratio(np.array(ratios))
        row = per.loc[patient]
        assert row["n"] == len(ratios)
        assert row["ratio"] == pytest.approx(gmean, rel=1e-12)
        if lo is None:
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
        else:
            assert row["ci_low"] == pytest.approx(lo, rel=1e-12) and row["ci_high"] == pytest.approx(hi, rel=1e-12)
    assert per.loc["A", "ratio"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    # pooled: the statistics' model of the lesion log ratios (tested against a brute-force
    # REML in test_stats); here: the same number as dualpet.stats gives
    from dualpet.stats.inference import mixed_model

    pooled = figures.pooled_ratio(pairs)
    fit = mixed_model(
        np.log(pairs["index"] / pairs["reference"]).to_numpy(), pairs["patient"].to_numpy(), log_ratio=True
    )
    assert pooled["n_patients"] == 3
    assert pooled["ratio"] == pytest.approx(fit["ratio"], rel=1e-12)
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx(tuple(fit["ratio_ci95"]), rel=1e-12)


def test_patient_ratios_random_cohort_against_scipy():
    rng = np.random.default_rng(7)
    n = rng.integers(1, 9, size=12)
    pairs = pd.DataFrame(
        {
            "patient": np.repeat([f"P{k:02d}" for k in range(len(n))], n),
            "lesion": [f"L{j + 1:02d}" for m in n for j in range(m)],
            "reference": rng.lognormal(1.5, 0.5, n.sum()),
            "index": rng.lognormal(1.2, 0.7, n.sum()),
        }
    )
    per = figures.patient_ratios(pairs).set_index("patient")
    for patient, group in pairs.groupby("patient"):
        gmean, lo, hi = _independent_patient_ratio((group["index"] / group["reference"]).to_numpy())
        assert per.loc[patient, "ratio"] == pytest.approx(gmean, rel=1e-10)
        if lo is not None:
            assert per.loc[patient, "ci_low"] == pytest.approx(lo, rel=1e-10)
            assert per.loc[patient, "ci_high"] == pytest.approx(hi, rel=1e-10)


def test_bland_altman_against_numpy():
    kept, _, _ = figures.included_lesions(lesions_table(), patients_table())
    pairs, _ = figures.paired_values(kept, REF, IDX, lesion_set="union")
    ba = figures.bland_altman(pairs)
    ref = np.array([4.0, 10.0, 6.0, 2.0, 5.0, 3.0, 8.0, 1.0])
    idx = np.array([8.0, 5.0, 3.0, 6.0, 5.0, 4.5, 2.0, 3.0])
    d = np.log(idx / ref)
    mean, sd = d.mean(), d.std(ddof=1)
    assert ba["n_lesions"] == 8 and ba["n_patients"] == 3
    assert np.allclose(ba["y"], d) and np.allclose(ba["x"], (np.log(ref) + np.log(idx)) / 2)
    assert ba["mean_diff"] == pytest.approx(mean) and ba["sd_diff"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(mean - 1.96 * sd) and ba["loa_high"] == pytest.approx(mean + 1.96 * sd)
    assert ba["loa_low_ratio"] == pytest.approx(math.exp(mean - 1.96 * sd))
    assert ba["loa_high_ratio"] == pytest.approx(math.exp(mean + 1.96 * sd))
    assert ba["mean_diff_ratio"] == pytest.approx(stats.gmean(idx / ref))
    one = figures.bland_altman(pairs.iloc[:1])
    assert one["n_lesions"] == 1 and one["sd_diff"] is None and one["loa_low"] is None
    assert one["mean_diff"] == pytest.approx(math.log(2.0))


def test_detection_by_region_hand_counted():
    kept, _, _ = figures.included_lesions(lesions_table(), patients_table())
    table = figures.detection_by_region(kept, REF, IDX)
    assert list(table.columns) == [
        "region",
        "lesions",
        f"{REF}_detected",
        f"{IDX}_detected",
        "both_detected",
        f"{REF}_only",
        f"{IDX}_only",
    ]
    expected = [
        ["bone", 2, 1, 2, 1, 0, 1],
        ["lung", 2, 1, 1, 0, 1, 1],
        ["liver", 2, 2, 2, 2, 0, 0],
        ["lymph node", 2, 2, 2, 2, 0, 0],
        ["other", 1, 1, 1, 1, 0, 0],
        ["(no region)", 1, 1, 1, 1, 0, 0],
        ["total", 10, 8, 9, 7, 1, 2],
    ]
    assert table.values.tolist() == expected


# --------------------------------------------------------------------------- files


def test_files_written_and_parse(written):
    out, result = written
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary files left
    for entry in result:
        png, svg = Path(entry["png"]).read_bytes(), entry["svg"]
        assert png.startswith(PNG_MAGIC)
        assert ET.parse(svg).getroot().tag.endswith("svg")
        text = svg_text(svg)
        assert "no data" not in text
        assert "<dc:date>" not in text and b"Software" not in png and b"Matplotlib" not in png
    tsv = pd.read_csv(out / "detection_by_region.tsv", sep="\t", keep_default_na=False)
    assert tsv.values.tolist()[-1] == ["total", 10, 8, 9, 7, 1, 2]
    # tracers and metric named on the axes (SVG text is kept as text)
    assert "SUVmax, fdg and pentixafor" in svg_text(out / "paired.svg")
    assert "ln SUVmax, pentixafor - ln SUVmax, fdg" in svg_text(out / "bland_altman.svg")
    assert "A (2)" in svg_text(out / "paired.svg")  # patient legend with its lesion count


def test_returned_dicts(written):
    _, result = written
    assert [e["name"] for e in result] == list(figures.FIGURES)
    json.dumps(result, allow_nan=False)  # JSON-ready: no NaN, no numpy types
    e = by_name(result)
    for name in ("paired", "patient_ratios", "bland_altman"):
        assert e[name]["n_lesions"] == 5
        assert e[name]["excluded_patients"] == ["D"]
        assert e[name]["left_out"] == [
            {"reason": "not detected on both tracers (lesion set 'both')", "lesions": 3},
            {"reason": f"SUVmax <= 0 on {REF}", "lesions": 1},
            {"reason": f"SUVmax missing or not finite on {IDX}", "lesions": 1},
            {"reason": "patient excluded", "lesions": 2},
        ]
        assert e[name]["caption"] == figures.caption(name, REF, IDX, "suvmax", "both")
    ratios = {r["patient"]: r for r in e["patient_ratios"]["numbers"]["patients"]}
    assert ratios["C"]["ci_low"] is None and ratios["B"]["ratio"] == pytest.approx(math.sqrt(1.5))
    assert e["bland_altman"]["numbers"]["n_lesions"] == 5
    assert e["detection_by_region"]["tsv"].endswith("detection_by_region.tsv")
    assert e["detection_by_region"]["numbers"]["table"][-1]["lesions"] == 10


def test_second_call_is_byte_identical(written, tmp_path):
    import matplotlib

    out, _ = written
    before = {name: (out / name).read_bytes() for name in FILES}
    rc = dict(matplotlib.rcParams)
    figures.write_figures(lesions_table(), patients_table(), REF, IDX, out)
    assert dict(matplotlib.rcParams) == rc  # the style settings stay inside the call
    assert {name: (out / name).read_bytes() for name in FILES} == before
    # and the output folder does not leak into the files
    figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path / "elsewhere")
    assert {name: (tmp_path / "elsewhere" / name).read_bytes() for name in FILES} == before


def test_captions():
    for name in figures.FIGURES:
        for lesion_set in figures.LESION_SETS:
            text = figures.caption(name, REF, IDX, "suvpeak", lesion_set)
            assert REF in text and IDX in text and "\n" not in text
            if name != "detection_by_region":
                assert "SUVpeak" in text
    assert "detected on both tracers" in figures.caption("paired", REF, IDX, "suvmax", "both")
    assert "t interval" in figures.caption("patient_ratios", REF, IDX, "suvmax", "reference")
    assert "1.96" in figures.caption("bland_altman", REF, IDX, "suvmax", "union")
    with pytest.raises(ValueError):
        figures.caption("histogram", REF, IDX, "suvmax", "both")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="lesion_set"):
        figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path, lesion_set="detected")
    with pytest.raises(ValueError, match="metric"):
        figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path, metric="suvmin")
    with pytest.raises(ValueError, match="both"):
        figures.write_figures(lesions_table(), patients_table(), REF, REF, tmp_path)
    with pytest.raises(ValueError, match="fdg_suvmean"):  # a table with rows must have the metric's columns
        figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path, metric="suvmean")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- nothing to draw


def _no_data(result):
    return {e["name"]: "no data" in svg_text(e["svg"]) for e in result}


def test_no_lesions(tmp_path):
    result = figures.write_figures(lesions_table([]), patients_table(), REF, IDX, tmp_path)
    assert all(_no_data(result).values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    tsv = pd.read_csv(tmp_path / "detection_by_region.tsv", sep="\t", keep_default_na=False)
    assert tsv.values.tolist() == [["total", 0, 0, 0, 0, 0, 0]]
    json.dumps(result, allow_nan=False)


def test_tables_without_columns(tmp_path):
    result = figures.write_figures(pd.DataFrame(), pd.DataFrame(), REF, IDX, tmp_path)
    assert all(_no_data(result).values())
    assert all(Path(e["png"]).read_bytes().startswith(PNG_MAGIC) for e in result)


def test_all_patients_excluded(tmp_path):
    result = figures.write_figures(
        lesions_table(), patients_table(excluded=("A", "B", "C", "D", "E")), REF, IDX, tmp_path, lesion_set="union"
    )
    assert all(_no_data(result).values())
    assert by_name(result)["paired"]["left_out"] == [{"reason": "patient excluded", "lesions": 12}]


def test_no_paired_lesions(tmp_path):
    rows = [r for r in ROWS if r[0] != "D" and not (r[3] and r[4])]  # detected on one tracer only
    result = figures.write_figures(lesions_table(rows), patients_table(), REF, IDX, tmp_path, lesion_set="both")
    assert _no_data(result) == {
        "paired": True,
        "patient_ratios": True,
        "bland_altman": True,
        "detection_by_region": False,
    }
    assert by_name(result)["paired"]["left_out"] == [
        {"reason": "not detected on both tracers (lesion set 'both')", "lesions": 3}
    ]


def test_one_patient_one_lesion(tmp_path):
    rows = [ROWS[0]]
    result = figures.write_figures(lesions_table(rows), patients_table(("A",), ()), REF, IDX, tmp_path)
    assert not any(_no_data(result).values())
    e = by_name(result)
    assert e["patient_ratios"]["numbers"]["patients"] == [
        {
            "patient": "A",
            "n": 1,
            "log_ratio": pytest.approx(math.log(2)),
            "ratio": pytest.approx(2.0),
            "ci_low": None,
            "ci_high": None,
        }
    ]
    # one patient: the statistics give no cohort ratio, so the figure draws none (issue 26)
    assert e["patient_ratios"]["numbers"]["pooled"] == {
        "n_patients": 1,
        "ratio": None,
        "ci_low": None,
        "ci_high": None,
        "reason": "fewer than 3 patients with paired lesions",
    }
    assert "no cohort estimate: fewer than 3 patients" in svg_text(e["patient_ratios"]["svg"])
    assert e["bland_altman"]["numbers"]["loa_low"] is None
    assert "limits of agreement need at least 2 lesions" in svg_text(e["bland_altman"]["svg"])


# --------------------------------------------------------------------------- reading quality (issue 22, item 6)


def _capture(monkeypatch):
    """The figures as drawn (name -> Figure), captured when write_figures saves them."""
    drawn, save = {}, figures._save

    def keep(fig, outdir, name):
        drawn[name] = fig
        return save(fig, outdir, name)

    monkeypatch.setattr(figures, "_save", keep)
    return drawn


def _labelled(axis):
    """The axis's major ticks inside its view that carry a label (after a draw)."""
    lo, hi = sorted(axis.get_view_interval())
    return [
        t
        for t, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
        if lo - 1e-12 <= t <= hi + 1e-12 and lab.get_text()
    ]


def _awkward_cohort(values):
    rows = []
    for n, (ref, idx) in enumerate(values):
        rows.append((f"P{n % 4}", f"L{n:02d}", "bone", 1, 1, ref, idx))
    return lesions_table(rows), patients_table(ids=("P0", "P1", "P2", "P3"), excluded=())


@pytest.mark.parametrize(
    "values",
    [
        [(2.2, 4.8), (3.1, 2.4), (4.4, 3.3), (2.6, 2.9), (3.9, 4.1), (2.3, 2.5), (4.7, 4.6), (3.3, 3.0)],  # one decade
        [
            (0.31, 4.0),
            (12.0, 40.0),
            (7.0, 0.9),
            (1.7, 25.0),
            (33.0, 3.1),
            (0.45, 0.6),
            (9.5, 11.0),
            (2.2, 38.0),
        ],  # three
    ],
)
def test_axis_ticks_bracket_every_plotted_value(tmp_path, monkeypatch, values):
    """Every numeric axis has a labelled tick at or below its smallest plotted value and one
    at or above its largest: the reader can read each value between two numbers."""
    drawn = _capture(monkeypatch)
    lesions, patients = _awkward_cohort(values)
    result = by_name(figures.write_figures(lesions, patients, REF, IDX, tmp_path))
    for fig in drawn.values():
        fig.canvas.draw()

    def brackets(axis, data):
        ticks = _labelled(axis)
        assert len(ticks) >= 2
        assert min(ticks) <= min(data) * (1 + 1e-9) and max(ticks) >= max(data) * (1 - 1e-9), (
            ticks,
            min(data),
            max(data),
        )

    points = result["paired"]["numbers"]["points"]
    brackets(drawn["paired"].axes[0].yaxis, [p["reference"] for p in points] + [p["index"] for p in points])
    forest = result["patient_ratios"]["numbers"]
    pooled = forest["pooled"]
    brackets(
        drawn["patient_ratios"].axes[0].xaxis,
        [p["ratio"] for p in forest["patients"]]
        + [v for v in (pooled["ratio"], pooled["ci_low"], pooled["ci_high"]) if v],
    )
    ba = result["bland_altman"]["numbers"]
    brackets(drawn["bland_altman"].axes[0].xaxis, ba["x"])
    brackets(drawn["bland_altman"].axes[0].yaxis, [*ba["y"], ba["mean_diff"], ba["loa_low"], ba["loa_high"]])


def test_a_patient_interval_on_one_df_is_not_drawn_but_named(tmp_path, monkeypatch):
    """A patient with two lesions (t on 1 df: the interval spans orders of magnitude) gets
    its ratio and the words 'no useful CI', not an interval such as [2e-05, 1.4e+04]."""
    drawn = _capture(monkeypatch)
    figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path)
    texts = [t.get_text() for t in drawn["patient_ratios"].axes[0].texts]
    line_a = next(t for t in texts if t.startswith(figures._fmt(1.0)) and "df" in t)  # A: ratios 2 and 0.5
    assert "2 lesions: no useful CI, t on 1 df" in line_a and "[" not in line_a
    assert any("1 lesion: no CI" in t for t in texts)  # C
    assert not any("e+" in t or "e-0" in t for t in texts)


def test_tracers_carry_their_display_names(tmp_path):
    """Config tracer_names reach every figure and caption; the tables keep the sheet's names."""
    names = {REF: "[18F]FDG", IDX: "[68Ga]Pentixafor"}
    result = figures.write_figures(lesions_table(), patients_table(), REF, IDX, tmp_path, names=names)
    for entry in result:
        text = svg_text(entry["svg"])
        assert "[18F]FDG" in text and "[68Ga]Pentixafor" in text, entry["name"]
        assert ">fdg" not in text and "pentixafor<" not in text and " fdg " not in text
        assert "[68Ga]Pentixafor" in entry["caption"]
    tsv = pd.read_csv(tmp_path / "detection_by_region.tsv", sep="\t", keep_default_na=False)
    assert tsv.values.tolist()[-1] == ["total", 10, 8, 9, 7, 1, 2]
