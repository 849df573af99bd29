"""io: everything that crosses the process boundary: JSONL reading (``jsonl``) and writing (``files``: atomic,
never onto an input, resumable sinks), Arrow shards (``arrow``), images and their checks (``images``, ``png``,
``sources``), paths and vouched image roots (``paths``), run reports and rejects (``report``), keys kept out of
every output (``secrets``), the OpenAI-compatible client (``api_client``), the Hub (``hub``), the terminal
(``cli_kit``, ``progress``)."""
