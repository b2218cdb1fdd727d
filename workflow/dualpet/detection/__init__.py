"""Lesion detection on a PET's own voxels, one module per concern.

- :mod:`~dualpet.detection.study`: one study, files in and files out (the ``segment``
  step): its background VOI, the detection method chosen in the config, the reader's
  review decisions, ``lesions.nii.gz`` and ``segmentation.json``.
- :mod:`~dualpet.detection.local` (method ``local``, the default): spots that stand out
  from the tissue they grow in by more than the image noise.
- :mod:`~dualpet.detection.threshold` (methods ``background``, ``fixed``, ``percist``):
  the voxels above a threshold, split at their own maxima.
- :mod:`~dualpet.detection.reader` (methods ``seeds`` and ``masks``): the reader's lesions.
- :mod:`~dualpet.detection.physiology`: the rules every automatic method applies to a
  candidate (end planes, the organ map's physiological uptake, vertebral marrow, bowel,
  organ-sized uptake, urine and fat on CT).
- :mod:`~dualpet.detection.noise`: the study's noise model and its axial profile.
- :mod:`~dualpet.detection.regions`: region helpers the detectors share (numbering,
  extents, boxes).

Each lesion's *region* (label value = lesion number) is where its VOI is grown (see
:func:`dualpet.metrics.isocontour_voi`); every rejected candidate is reported with its
reason in ``segmentation.json``.
"""

#: Methods that threshold the image (:mod:`~dualpet.detection.threshold`).
THRESHOLD_METHODS = ("background", "fixed", "percist")
#: The method comparing each spot with its own surroundings and the image noise.
LOCAL_METHOD = "local"
#: Methods taking the lesions from the reader (:mod:`~dualpet.detection.reader`).
READER_METHODS = ("seeds", "masks")
#: Every detection method (the config schema's ``detection.method`` choices).
METHODS = (LOCAL_METHOD, *THRESHOLD_METHODS, *READER_METHODS)
