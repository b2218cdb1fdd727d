"""Reader decisions (dualpet.review) on a constructed study with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dualpet.detection.regions import number_lesions
from dualpet.geometry import apply_affine
from dualpet.review import REVIEW_TOLERANCE_MM, apply_decisions, pin

AFF = np.diag([4.0, 4.0, 4.0, 1.0])


def _study():
    """Background 1.0; lesions A (peak 8) and B (peak 6) found by 'detection'; a spot C
    (peak 3) that detection missed."""
    shape = (40, 40, 40)
    idx = np.indices(shape)
    suv = np.ones(shape, np.float32)
    centres = {"A": (10, 10, 20), "B": (30, 10, 20), "C": (20, 30, 20)}
    for name, peak in (("A", 8.0), ("B", 6.0), ("C", 3.0)):
        d2 = sum((idx[a] - centres[name][a]) ** 2 for a in range(3))
        suv += ((peak - 1.0) * np.exp(-d2 / (2 * 1.5**2))).astype(np.float32)
    lesions = []
    for name in ("A", "B"):
        region = sum((idx[a] - centres[name][a]) ** 2 for a in range(3)) <= 4
        lesions.append(
            {
                "suvmax": float(suv[region].max()),
                "peak_lps": apply_affine(AFF, centres[name]).tolist(),
                "_region": region,
                "name": name,
            }
        )
    labels = number_lesions(lesions, shape)
    return suv, labels, lesions, {k: apply_affine(AFF, v) for k, v in centres.items()}


def test_reject_accept_add_and_a_decision_that_finds_nothing():
    suv, labels, lesions, at = _study()
    decisions = [
        {"decision": "reject", "x": at["A"][0] + 5, "y": at["A"][1], "z": at["A"][2], "reader": "r1", "note": "bowel"},
        {"decision": "accept", "x": at["B"][0], "y": at["B"][1], "z": at["B"][2], "reader": "r1"},
        {"decision": "add", "x": at["C"][0] + 4, "y": at["C"][1], "z": at["C"][2], "reader": "r2"},
        {"decision": "reject", "x": 5.0, "y": 150.0, "z": 5.0, "reader": "r2"},  # nothing there
    ]
    labels, lesions, rejected, record = apply_decisions(suv, AFF, labels, lesions, [], decisions)
    names = {les.get("name", "added"): les for les in lesions}
    assert set(names) == {"B", "added"}
    assert names["B"]["origin"] == "reader-accepted" and names["added"]["origin"] == "reader-added"
    # the added lesion is the spot's own maximum (searched within the seed radius of the click)
    assert np.allclose(names["added"]["peak_lps"], at["C"])
    assert rejected[0]["name"] == "A" and "r1" in rejected[0]["reason"] and "bowel" in rejected[0]["reason"]
    assert record[3]["applied"].startswith("not applied")
    # renumbered: labels 1..2, each lesion's region under its own label
    assert set(np.unique(labels)) == {0, 1, 2}
    for les in lesions:
        assert labels[tuple(np.rint(np.asarray(les["peak_lps"]) / 4.0).astype(int))] == les["label"]


def test_decisions_outside_the_pet_or_in_conflict_are_not_applied_never_an_error():
    """Issue 23 (campaign): an add or accept outside the PET (or x = 1e999) excluded the
    whole patient, and a reject and an accept of one lesion were both applied in order.
    Such rows are recorded as not applied, saying why; the other rows still apply."""
    suv, labels, lesions, at = _study()
    decisions = [
        {"decision": "add", "x": 9000.0, "y": 0.0, "z": 0.0, "reader": "r1"},  # outside the PET
        {"decision": "accept", "x": float("inf"), "y": 0.0, "z": 0.0, "reader": "r1"},  # '1e999' in the sheet
        {"decision": "reject", "x": at["A"][0], "y": at["A"][1], "z": at["A"][2], "reader": "r1"},
        {
            "decision": "accept",
            "x": at["A"][0] + 3,
            "y": at["A"][1],
            "z": at["A"][2],
            "reader": "r2",
        },  # the same lesion
        {"decision": "reject", "x": at["B"][0], "y": at["B"][1], "z": at["B"][2], "reader": "r2"},
    ]
    labels, lesions, rejected, record = apply_decisions(suv, AFF, labels, lesions, [], decisions)
    applied = [r["applied"] for r in record]
    assert applied[0] == "not applied: the position lies outside this study's PET"
    assert applied[1] == "not applied: the position is not a number"
    assert applied[2].startswith("not applied: contradicting decisions on one lesion (row 3 (reject), row 4 (accept)")
    assert applied[3] == applied[2]
    assert applied[4].startswith("rejected the lesion")
    assert {les["name"] for les in lesions} == {"A"} and [r["name"] for r in rejected] == ["B"]  # A kept: in conflict
    import json

    json.dumps(record, allow_nan=False)  # the record stays valid JSON (no inf)


def test_positions_not_numbers_decide():
    """A decision at a lesion's peak but outside its region counts within the tolerance
    and not beyond it."""
    suv, labels, lesions, at = _study()
    near = {"decision": "reject", "x": at["B"][0], "y": at["B"][1] + REVIEW_TOLERANCE_MM - 1, "z": at["B"][2]}
    far = {"decision": "reject", "x": at["B"][0], "y": at["B"][1] + REVIEW_TOLERANCE_MM + 4, "z": at["B"][2]}
    _, kept, _, rec = apply_decisions(suv, AFF, labels, [dict(les) for les in lesions], [], [far])
    assert len(kept) == 2 and rec[0]["applied"].startswith("not applied")
    suv, labels, lesions, at = _study()
    _, kept, _, rec = apply_decisions(suv, AFF, labels, lesions, [], [near])
    assert [les["name"] for les in kept] == ["A"]


def test_pin_fills_the_position_of_a_lesion_id(tmp_path):
    (tmp_path / "results" / "P1").mkdir(parents=True)
    pd.DataFrame(
        {
            "patient": ["P1", "P1"],
            "lesion": ["L01", "L02"],
            "x_mm": [1.0, 10.0],
            "y_mm": [2.0, 20.0],
            "z_mm": [3.0, 30.0],
        }
    ).to_csv(tmp_path / "results" / "P1" / "lesions.tsv", sep="\t", index=False)
    sheet = tmp_path / "review.tsv"
    sheet.write_text("patient\ttracer\tlesion\tdecision\nP1\tfdg\tL02\treject\n")
    assert pin(sheet, tmp_path / "results", "fdg") == 1
    got = pd.read_csv(sheet, sep="\t", dtype=str).iloc[0]
    assert [float(got[c]) for c in "xyz"] == pytest.approx([10.0, 20.0, 30.0])
    sheet.write_text("patient\ttracer\tlesion\tdecision\nP1\tfdg\tL09\treject\n")
    with pytest.raises(Exception, match="no lesion L09"):
        pin(sheet, tmp_path / "results", "fdg")


def test_one_column_order_for_the_sheet_the_schema_the_page_and_the_readme():
    """The review sheet's columns are REVIEW_COLUMNS everywhere: the schema lists them in
    that order, the README's table documents them in that order, the page's ready lines
    follow it."""
    import re
    from pathlib import Path

    import yaml

    from dualpet.review import REVIEW_COLUMNS
    from dualpet.reviewpage import review_row

    repo = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "review.schema.yaml").read_text())
    assert tuple(schema["properties"]) == REVIEW_COLUMNS
    readme = (repo / "README.md").read_text()
    table = readme[readme.index("| column |", readme.index("Decisions go into a tab-separated **review sheet**")) :]
    table = table[: table.index("\n\n")]
    documented = [c for line in table.splitlines()[2:] for c in re.findall(r"`([a-z]+)`", line.split("|")[1])]
    assert tuple(documented) == REVIEW_COLUMNS
    line = review_row("P001", "fdg", (1.0, 2.0, 3.0), "reject", "L04").split("\t")
    assert dict(zip(REVIEW_COLUMNS, line)) == {
        "patient": "P001",
        "tracer": "fdg",
        "x": "1.0",
        "y": "2.0",
        "z": "3.0",
        "decision": "reject",
        "reader": "",
        "note": "",
        "lesion": "L04",
    }
