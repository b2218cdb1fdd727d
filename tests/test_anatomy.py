"""The anatomy stage's sources of an organ map: a user's map (studies sheet organ_mask) and
TotalSegmentator (its real command line, run here through a stand-in that writes a known
map, since its weights cannot be fetched on the test machine)."""

from __future__ import annotations

import os
import stat

import nibabel as nib
import numpy as np
import pytest

from dualpet.anatomy import ORGANS, TOTALSEGMENTATOR_ARGS, anatomy_study
from dualpet.geometry import ras_affine
from dualpet.io import read_json


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small CT (air around a water cylinder) and a TotalSegmentator-style map on a grid
    twice as coarse: lung lobes 10 and 13, liver 5, vertebra T12 (32)."""
    d = tmp_path_factory.mktemp("anat")
    hu = np.full((40, 40, 20), -1000.0, np.float32)
    ii, jj = np.indices((40, 40))
    hu[(ii - 20) ** 2 + (jj - 20) ** 2 <= 15**2] = 0.0
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(hu, ras_affine(aff)), str(d / "ct.nii.gz"))
    ts = np.zeros((20, 20, 10), np.uint8)
    ts[5:9, 5:9, 2:5], ts[11:15, 5:9, 2:5], ts[8:12, 11:15, 5:8], ts[9:11, 14:16, 1:9] = 10, 13, 5, 32
    taff = np.diag([6.0, 6.0, 6.0, 1.0])
    taff[:3, 3] = 1.5  # voxel centres of the coarse grid lie between those of the CT
    nib.save(nib.Nifti1Image(ts, ras_affine(taff)), str(d / "ts.nii.gz"))
    return d


def _check(d, labels, report):
    assert labels.shape == (40, 40, 20) and labels.dtype == np.uint8
    assert report["lung_left"]["found"] and report["lung_right"]["found"] and report["liver"]["found"]
    assert report["vertebrae"]["found"] and not report["heart"]["found"]
    # nearest-neighbour resampling keeps TotalSegmentator's numbers; body fills the rest
    assert set(np.unique(labels)) == {0, 5, 10, 13, 32, ORGANS["body"]}
    # 4 x 4 x 3 coarse voxels of 6 mm = 41.5 mL per lobe (the resampling keeps volumes to a voxel layer)
    assert report["liver"]["volume_ml"] == pytest.approx(4 * 4 * 3 * 0.216, rel=0.35)
    side = read_json(d / "anatomy.json")
    assert side["labels"]["lung_right"]["totalsegmentator_classes"] == [12, 13, 14]


def test_organ_mask_from_the_sheet_replaces_the_rules(study):
    labels, report = anatomy_study(study / "ct.nii.gz", study / "anatomy.nii.gz", study / "anatomy.json",
                                   organ_mask=study / "ts.nii.gz", png=study / "anatomy.png", patient="P1", tracer="fdg")  # fmt: skip
    _check(study, labels, report)
    assert read_json(study / "anatomy.json")["method"] == "organ_mask"
    assert (study / "anatomy.png").stat().st_size > 1000


def test_totalsegmentator_is_called_with_its_command_line(study, tmp_path, monkeypatch):
    """The real call: TotalSegmentator -i CT -o OUT --ml --task total [config args]."""
    fake = tmp_path / "bin" / "TotalSegmentator"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path}/args
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift;; esac; shift; done
cp {study}/ts.nii.gz "$out"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    labels, report = anatomy_study(study / "ct.nii.gz", study / "anatomy.nii.gz", study / "anatomy.json",
                                   method="totalsegmentator", totalsegmentator_args=["--fast"])  # fmt: skip
    _check(study, labels, report)
    args = (tmp_path / "args").read_text().split()
    assert args[:2] == ["-i", str(study / "ct.nii.gz")] and args[2] == "-o"
    assert args[4:] == [*TOTALSEGMENTATOR_ARGS, "--fast"]
    assert read_json(study / "anatomy.json")["method"] == "totalsegmentator"


def test_totalsegmentator_missing_is_a_machine_error(study, tmp_path, monkeypatch):
    """Not installed: the job fails loudly (RuntimeError), no patient is excluded for it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="TotalSegmentator command is not on PATH"):
        anatomy_study(study / "ct.nii.gz", tmp_path / "a.nii.gz", tmp_path / "a.json", method="totalsegmentator")
