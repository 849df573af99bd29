"""annotation: the Label Studio stage (push tasks and pre-annotations, pull annotations, agreement).

Not implemented yet (issue 3); ``sdg annotate`` appears in ``sdg --help`` once it works.
"""
