"""sdg_data: the SDG core. Any file is found by its role:

* here, the **data contract** every stage shares: ``records`` (one record type), ``boxes`` (one box type and the
  only coordinate arithmetic), ``answer`` (the ``<think>``/``<answer>`` response), ``detector_prompt``, ``splits``,
  ``matching``; ``config`` (settings as dataclasses + YAML recipes) and ``cli`` (the ``sdg`` command);
* ``io/``: reading and writing: JSONL lines, atomic and resumable files, Arrow shards, image checks, PNG, paths
  and image roots, run reports and rejects, key redaction, the OpenAI-compatible client, the Hub, the CLI kit;
* ``scoring/``: SDG-Eval, COCO and joint AP, the GRPO reward, image-level metrics, description embeddings;
* ``dataset/``: the Hugging Face dataset build, jitter, stats, drawings;
* ``interop/``: other formats in and out: SDG-30K's release, COCO, RichHF-18K;
* ``generate/``: prompts to images with the four generators; ``testkit/``: tiny models and loopback servers.

A module imports only from its own role or the ones listed before it (``tests/test_structure.py`` keeps it so);
the core imports no stage.
"""

__version__ = "0.1.0"

SCHEMA_VERSION = "1.2"
"""Version of the record JSON/Arrow schema; a major bump means old files need a converter.

1.1 added the optional ``think`` (the distilled reasoning); 1.0 files read unchanged."""
