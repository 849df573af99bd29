"""dataset: the Hugging Face dataset (``build``, with ``jitter`` for SFT pairs and ``pagecache`` for cold reads),
what is in it (``stats``) and how it looks (``viz``, ``fonts``); ``cli``: build, stats, viz, validate."""
