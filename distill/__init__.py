"""distill: the teacher stage. ``sdg distill`` (``distill/cli.py``) turns each annotated image into the detector's
target (a three-step think, English descriptions, importance) with an offline template teacher or a VLM behind an
OpenAI-compatible API, keeping the human boxes and labels exactly; finished records are cached for resume."""
