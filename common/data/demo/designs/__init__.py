"""How each 2D demo dataset is drawn, keyed by ``spec.name``: one module per dataset (its ``draw``
and its ``DESIGN``), and a generic phantom for any other name.
"""

from __future__ import annotations

from common.data.demo.designs import brain_growth, brain_tumor, generic, kidney, prostate
from common.data.demo.shapes import Design
from common.spec import DatasetSpec

DESIGNS: dict[str, Design] = {
    "brain-growth": brain_growth.DESIGN,
    "brain-tumor": brain_tumor.DESIGN,
    "kidney": kidney.DESIGN,
    "prostate": prostate.DESIGN,
}
DESIGNS_GENERIC = generic.DESIGN


def design_for(spec: DatasetSpec) -> Design:
    return DESIGNS.get(spec.name, DESIGNS_GENERIC)
