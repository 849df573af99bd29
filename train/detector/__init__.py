"""detector: the SDG detector's training (SFT, GRPO with the SDG reward) and inference (``sdg detect``)."""
