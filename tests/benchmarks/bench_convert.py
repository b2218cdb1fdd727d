"""Conversion benchmark: dualpet vs dcm2niix on one clinical-size study.

    python tests/benchmarks/bench_convert.py [--workdir /tmp/dualpet-bench] [--repeat 3]

Generates one clinical-size patient (`dualpet synth --size clinical`, CT 512x512x300,
PET 200x200x300) unless present, then converts its CT and PET series with dualpet (PET to
SUVbw) and with dcm2niix (`-z y`, gzip on), each in its own process, and prints wall time
(best of --repeat), peak resident memory, their ratios, and peak memory relative to the
volume's size as float32. Needs `pip install dcm2niix` (the project's `bench` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

OURS = """
import sys
sys.path.insert(0, {pkg!r})
from dualpet.dicom import choose_pet, load_series, scan_folder
from dualpet.nifti import nifti_image, save_nifti
from dualpet.convert import convert_pet
folder, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
found = scan_folder(folder)  # one series folder: the PET, or the CT
series = choose_pet(found)[0] if kind == "pet_ac" else next(s for s in found.values() if s.kind == kind)
if kind == "pet_ac":
    convert_pet(series, out, out.replace(".nii.gz", ".json"), where="bench")
else:
    vol = load_series(series)
    save_nifti(out, nifti_image(vol.data.astype("int16"), vol.affine))
"""


def run(cmd):
    """Run a command; return (wall seconds, peak RSS in MiB) of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024.0


def best(cmd, repeat):
    runs = [run(cmd) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "dualpet-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    if not Path(dcm2niix).exists():
        raise SystemExit("dcm2niix not found: pip install dcm2niix")
    study = work / "cohort" / "dicom" / "P001" / "fdg"
    if not study.exists():
        # in a child process: the RSS high-water mark of this process is inherited by the
        # measured children across fork/exec, so it must stay small
        print("generating one clinical-size patient ...", flush=True)
        gen = f"import sys; sys.path.insert(0, {str(REPO / 'workflow')!r}); from dualpet.synth import generate_cohort; "
        gen += f"generate_cohort({str(work / 'cohort')!r}, n_patients=1, seed=1, size='clinical', log=lambda m: None)"
        wall, peak = run([sys.executable, "-c", gen])
        print(f"  synth --size clinical: {wall:.1f} s for 2 studies, peak {peak:.0f} MiB")
    code = OURS.format(pkg=str(REPO / "workflow"))
    print(f"{'series':<6} {'tool':<9} {'wall s':>8} {'peak MiB':>9} {'volume MiB':>10} {'peak/vol':>8}")
    for series, kind, voxels in (("CT_2", "ct_axial", 512 * 512 * 300), ("PT_3", "pet_ac", 200 * 200 * 300)):
        vol_mib = voxels * 4 / 2**20  # the volume as float32
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        ours = best([sys.executable, "-c", code, str(study / series), str(out / f"{series}.nii.gz"), kind], a.repeat)
        theirs = best(
            [dcm2niix, "-z", "y", "-b", "n", "-o", str(out), "-f", f"d2n_{series}", str(study / series)], a.repeat
        )
        for tool, (wall, peak) in (("dualpet", ours), ("dcm2niix", theirs)):
            print(f"{series:<6} {tool:<9} {wall:8.2f} {peak:9.0f} {vol_mib:10.0f} {peak / vol_mib:8.2f}")
        print(f"{series:<6} ratio     {ours[0] / theirs[0]:8.2f}x wall, {ours[1] / theirs[1]:.2f}x peak memory")


if __name__ == "__main__":
    main()
