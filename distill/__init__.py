"""distill: teacher reasoning, coordinate jitter and the dataset build.

Not implemented yet (issue 4); ``sdg distill`` and ``sdg build`` appear in ``sdg --help`` once they work.
"""
