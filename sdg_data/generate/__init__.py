"""generate: ``sdg generate``, images from prompts with the four SDG-30K generators through diffusers, rank-sharded
and resumable, each image with its provenance; ``tiny`` builds random pipelines of the same classes offline."""
