"""The anatomy stage's sources of an organ map: a user's map (studies sheet organ_mask) and
TotalSegmentator (its real command line, run here through a stand-in that writes a known
map, since its weights cannot be fetched on the test machine)."""

from __future__ import annotations

import os
import stat

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dualpet.anatomy import ORGANS, TOTALSEGMENTATOR_ARGS, _Context, _organ_from_seed, anatomy_study
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
    labels, report = anatomy_study(
        study / "ct.nii.gz",
        study / "anatomy.nii.gz",
        study / "anatomy.json",
        organ_mask=study / "ts.nii.gz",
        png=study / "anatomy.png",
        patient="P1",
        tracer="fdg",
    )
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
    labels, report = anatomy_study(
        study / "ct.nii.gz",
        study / "anatomy.nii.gz",
        study / "anatomy.json",
        method="totalsegmentator",
        totalsegmentator_args=["--fast"],
    )
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


@pytest.mark.parametrize("noise_hu", [10.0, 30.0])
def test_organ_growing_stops_at_touching_tissue_of_near_density(noise_hu):
    """A plain-CT liver (62 HU, an ellipsoid) pressed against body-wall muscle (45 HU, a
    slab) and a spleen-like blob (50 HU) touching it, in fat, with white noise per 3 mm
    voxel: grown from its centre, the organ is the liver. Truth is the painted geometry.
    Bounds: Dice >= 0.85 (the boundary voxels, a few % of a ~40-voxel-wide organ, are shared
    with tissue 12-17 HU away; noise of 30 HU leaves about 4 HU after denoising); of the
    neighbours, only what lies within 6 mm (2 voxels) of the liver may be taken (the layer
    blurred halfway to its density, and the notch where the two touch, which the 6 mm
    closing fills), and no more than 2 % of them beyond that (measured 0-1.5 %)."""
    n = (64, 64, 40)
    ii, jj, kk = np.indices(n)
    liver = ((ii - 30) / 20.0) ** 2 + ((jj - 32) / 16.0) ** 2 + ((kk - 20) / 14.0) ** 2 <= 1.0
    muscle = (ii >= 50) & (ii < 56) & ~liver  # touches the liver's lateral face
    spleen = (((ii - 30) / 8.0) ** 2 + ((jj - 54) / 7.0) ** 2 + ((kk - 20) / 10.0) ** 2 <= 1.0) & ~liver
    hu = np.full(n, -100.0, np.float32)
    hu[muscle], hu[spleen], hu[liver] = 45.0, 50.0, 62.0
    hu += np.random.default_rng(5).normal(0.0, noise_hu, n).astype(np.float32)
    c = _Context(hu, np.diag([3.0, 3.0, 3.0, 1.0]))
    allowed = (c.denoised > -50.0) & (c.denoised < 200.0)
    organ, level, half = _organ_from_seed(c, (30, 32, 20), allowed)
    assert abs(level - 62.0) < 5.0 and 10.0 <= half <= 25.0
    assert 2.0 * (organ & liver).sum() / (organ.sum() + liver.sum()) >= 0.85
    beyond = ~ndimage.binary_dilation(liver, iterations=2)
    for other in (muscle, spleen):
        assert (organ & other & beyond).sum() <= 0.02 * other.sum()
