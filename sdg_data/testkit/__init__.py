"""testkit: everything tests, benchmarks and the demo stand in for the real world with, in one place.

* :mod:`~sdg_data.testkit.models`: tiny random-weight models of the real classes (Qwen3 text embedder, Qwen3-VL
  detector) and offline tokenizers, built from configs in seconds; ``python -m sdg_data.testkit.models DIR``
  writes the tiny detector.
* :mod:`~sdg_data.testkit.pipelines`: tiny random pipelines of the four SDG-30K generator classes;
  ``python -m sdg_data.testkit.pipelines DIR`` writes them for ``sdg generate --model-root DIR``.
* :mod:`~sdg_data.testkit.chat_server`: a loopback OpenAI-compatible chat server with latency and faults; the
  teacher it plays by default comes from the distill stage (``distill.fake_teacher``).

Nothing here is used to make data: a tiny model's output is noise, and its records say so in their provenance.
"""
