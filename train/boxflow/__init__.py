"""boxflow: BoxFlow-GRPO, diffusion alignment rewarded by a judge and the SDG detector's boxes."""
