"""interop: other formats in and out of SDG records: the authors' SDG-30K release (``sdg30k``), COCO (``coco``)
and RichHF-18K (``richhf``); ``cli``: sdg import sdg30k|coco|richhf and sdg export coco."""
