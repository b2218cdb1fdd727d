"""dualpet: dual-tracer PET/CT cohort analysis.

One module per concept: :mod:`dualpet.dicom` (series discovery, slice geometry),
:mod:`dualpet.suv` (SUVbw factors), :mod:`dualpet.geometry` (LPS/RAS affines),
:mod:`dualpet.registration`, :mod:`dualpet.anatomy` (organ map), :mod:`dualpet.detection`
(lesions), :mod:`dualpet.background`,
:mod:`dualpet.metrics`, :mod:`dualpet.matching`, :mod:`dualpet.cohort`,
:mod:`dualpet.stats` and the reference-data generator :mod:`dualpet.synth`.
"""

__version__ = "0.1.0"
