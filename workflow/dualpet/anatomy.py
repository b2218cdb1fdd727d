"""Anatomy from the CT: the CT numbers every organ rule uses, in one place.

Each window is named after what it selects on a non-contrast CT (values in HU, after the
light smoothing the rules apply). The rules that find organs (background, region labels,
the urine rule) import them from here, so that one change reaches every rule; the organ
label map that will serve them all (issue: anatomy stage) builds on the same constants.
"""

from __future__ import annotations

#: Body (patient and anything touching it) versus air.
BODY_HU_MIN = -400.0
#: Aerated lung inside the body: below this (and the body's outline filled).
LUNG_HU_MAX = -500.0
#: Aerated lung as a window: outside air and bowel gas (about -1000 HU) stay below it.
LUNG_HU = (-950.0, -500.0)
#: Fat (subcutaneous, mediastinal, retroperitoneal, mesenteric, nodal).
FAT_HU = (-190.0, -30.0)
#: Non-contrast soft tissue and blood (muscle, vessels, unenhanced organs).
SOFT_TISSUE_HU = (-50.0, 100.0)
#: Non-contrast liver parenchyma (~55-65 HU: denser than muscle and spleen).
LIVER_HU = (50.0, 85.0)
#: Water density: urine in the bladder, ureters and renal pelves.
WATER_HU = (-20.0, 20.0)
#: Bone (cortex and dense marrow) from this value up.
BONE_HU_MIN = 150.0
