"""sdg_data: the SDG data contract (records, boxes, answer format) and its scorers (SDG-Eval, GRPO reward)."""

__version__ = "0.1.0"

SCHEMA_VERSION = "1.1"
"""Version of the record JSON/Arrow schema; a major bump means old files need a converter.

1.1 added the optional ``think`` (the distilled reasoning); 1.0 files read unchanged."""
