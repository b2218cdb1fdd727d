"""Study folders: only regular files are read (a named pipe never blocks), foreign files
are skipped unread, and the content fingerprint follows every change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pydicom
from conftest import REPO

from dualpet.dicom import looks_like_dicom, scan_folder
from dualpet.files import folder_fingerprint


def test_named_pipe_does_not_hang(cohort_dir, tmp_path, tool_env):
    shutil.copytree(cohort_dir / "dicom" / "P001" / "fdg" / "PT_3", tmp_path / "s")
    os.mkfifo(tmp_path / "s" / "pipe.dcm")
    os.mkfifo(tmp_path / "s" / "zz_pipe")
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'workflow')!r}); from dualpet.dicom import scan_folder; "
        f"from dualpet.files import folder_fingerprint; s = scan_folder({str(tmp_path / 's')!r}); "
        f"print(len(s), folder_fingerprint({str(tmp_path / 's')!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=tool_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "1"


def test_foreign_files_are_skipped_unread(cohort_dir, tmp_path):
    shutil.copytree(cohort_dir / "dicom" / "P001" / "fdg" / "PT_3", tmp_path / "s")
    (tmp_path / "s" / "video.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 5000)
    (tmp_path / "s" / "README").write_text("exported by PACS")
    assert not looks_like_dicom(tmp_path / "s" / "video.mp4") and not looks_like_dicom(tmp_path / "s" / "README")
    # a DICOM file written without the 128-byte preamble is still read
    src = next((tmp_path / "s").glob("*.dcm"))
    ds = pydicom.dcmread(src)
    ds.preamble = None
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # another image (a second copy of one is read once)
    raw = tmp_path / "s" / "nopreamble"
    pydicom.dcmwrite(raw, ds, enforce_file_format=False)
    with open(raw, "rb") as fh:
        assert fh.read(132)[128:132] != b"DICM"
    assert looks_like_dicom(raw)
    series = scan_folder(tmp_path / "s")
    assert len(series) == 1 and len(next(iter(series.values())).files) == len(list((tmp_path / "s").glob("*.dcm"))) + 1


def test_fingerprint_follows_every_change(cohort_dir, tmp_path):
    shutil.copytree(cohort_dir / "dicom" / "P001" / "fdg" / "PT_3", tmp_path / "s")
    folder = tmp_path / "s"
    first = folder_fingerprint(folder)
    assert first == folder_fingerprint(folder)  # stable
    f = sorted(folder.glob("*.dcm"))[3]
    st = f.stat()
    ds = pydicom.dcmread(f)
    ds.PatientWeight = "71"  # same size, new content
    ds.save_as(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    edited = folder_fingerprint(folder)
    assert edited != first
    (folder / "extra.dcm").write_bytes(b"x")
    added = folder_fingerprint(folder)
    assert added not in (first, edited)
    (folder / "extra.dcm").unlink()
    assert folder_fingerprint(folder) == edited
    assert folder_fingerprint(tmp_path / "nope") == "missing"


def test_fingerprint_sees_a_same_size_edit_with_its_time_restored(cohort_dir, tmp_path):
    """Issue 23 (campaign): PatientWeight 80.5 -> 90.5 (same size), modification time set
    back: size and mtime alone missed it, pet.json kept 80.5 kg. The change time cannot be
    set back."""
    shutil.copytree(cohort_dir / "dicom" / "P001" / "fdg" / "PT_3", tmp_path / "s")
    folder = tmp_path / "s"
    f = sorted(folder.glob("*.dcm"))[3]
    ds = pydicom.dcmread(f)
    ds.PatientWeight = "80.5"
    ds.save_as(f)
    before, st = folder_fingerprint(folder), f.stat()
    ds.PatientWeight = "90.5"
    ds.save_as(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time restored
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert folder_fingerprint(folder) != before


def test_a_nifti_gz_is_nibabels_stream_compressed_deterministically(tmp_path):
    """Issue 27: .nii.gz outputs are compressed by ISA-L (a quarter of zlib's time). The
    stream inside is the one nibabel writes, to the byte; two saves of one image are the
    same file (no name or time in the gzip header), and nibabel reads it back."""
    import gzip

    import nibabel as nib
    import numpy as np

    from dualpet.nifti import nifti_image, save_nifti

    rng = np.random.default_rng(0)
    for data in (rng.normal(0, 100, (21, 17, 9)).astype(np.int16), rng.random((5, 6, 7)).astype(np.float32)):
        img = nifti_image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
        save_nifti(tmp_path / "a.nii.gz", img)
        save_nifti(tmp_path / "b.nii.gz", img)
        nib.save(img, tmp_path / "nibabel.nii.gz")
        ours = (tmp_path / "a.nii.gz").read_bytes()
        assert ours == (tmp_path / "b.nii.gz").read_bytes()
        assert gzip.decompress(ours) == gzip.decompress((tmp_path / "nibabel.nii.gz").read_bytes())
        back = nib.load(tmp_path / "a.nii.gz")
        assert np.array_equal(np.asarray(back.dataobj), data) and back.get_data_dtype() == data.dtype
        assert b"a.nii" not in ours[:64]  # no file name in the gzip header
    save_nifti(tmp_path / "plain.nii", img)  # an uncompressed output is nibabel's own file
    assert (tmp_path / "plain.nii").read_bytes()[:4] != b"\x1f\x8b\x08\x00"


def test_load_nifti_reads_what_nibabel_reads(tmp_path):
    """Issue 27: .nii.gz read through ISA-L (twice zlib's speed) give nibabel's image: the
    same header, affine, stored type and values, scaled where the header says so, read
    again on demand; other files (uncompressed, NIfTI-2) are nibabel's own."""
    import nibabel as nib
    import numpy as np

    from dualpet.nifti import load_nifti

    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 2000, (11, 9, 7)).astype(np.int16)
    cases = {}
    plain = nib.Nifti1Image(data, np.diag([0.9, 0.9, 3.0, 1.0]))
    cases["plain.nii.gz"] = plain
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(0.5, 10.0)  # stored values scaled on reading
    cases["scaled.nii.gz"] = scaled
    cases["uncompressed.nii"] = plain
    cases["two.nii.gz"] = nib.Nifti2Image(data, np.eye(4))
    for name, img in cases.items():
        nib.save(img, tmp_path / name)
        want, got = nib.load(tmp_path / name), load_nifti(tmp_path / name)
        assert type(got) is type(want), name
        assert got.header.binaryblock == want.header.binaryblock and np.array_equal(got.affine, want.affine)
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj)), name
        assert np.asarray(got.dataobj).dtype == np.asarray(want.dataobj).dtype, name
        assert np.array_equal(got.get_fdata(), want.get_fdata()), name  # a second read of the stream
