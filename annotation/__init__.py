"""annotation: the Label Studio stage. ``sdg annotate serve | stop | init | push | predict | pull | agreement |
status`` (``annotation/cli.py``): run a locked-down server, push tasks and detector pre-annotations, pull annotations
as core records (with consolidation and rejects), and measure agreement between annotators."""
