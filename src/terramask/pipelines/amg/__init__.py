"""Automatic mask generation ("segment everything") on one image.

The public entry points live in :mod:`terramask.pipelines.amg.generator` and are
re-exported here: ``generate`` (a :class:`~terramask.core.maskset.MaskSet`),
``generate_compact`` (an :class:`AmgResult` with windowed masks) and ``records``
(the reference generator's record dicts).
"""

from terramask.pipelines.amg.generator import AmgResult, generate, generate_compact, records

__all__ = ["AmgResult", "generate", "generate_compact", "records"]
