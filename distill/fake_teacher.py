"""The teacher that :mod:`sdg_data.testkit.chat_server` plays for distill's tests and benchmark: it answers from
the facts block of the request with the template teacher, and its ``moved`` and ``dropped`` faults move one box
or drop one, as a careless VLM would.

    python -m distill.fake_teacher --port 8000 --latency 0.2 --fault-rate 0.1
"""

from __future__ import annotations

import re
from typing import Any

from distill import template_teacher
from distill.prompting import read_facts
from sdg_data.testkit.chat_server import EXTRA_FAULTS, FAULTS, LoopbackChat, LoopbackChatServer, cli_args, serve


__all__ = ["EXTRA_FAULTS", "FAULTS", "FakeTeacher", "FakeTeacherServer", "teacher_reply"]
FakeTeacherServer = LoopbackChatServer


def teacher_reply(body: dict[str, Any], image_id: str, fault: str | None) -> str:
    """The template teacher's reply to the request's facts; ``moved`` shifts the first box, ``dropped`` drops it."""
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    user = next(m for m in body["messages"] if m["role"] == "user")
    text = "".join(b.get("text", "") for b in user["content"] if b.get("type") == "text")
    fact_list = read_facts(text)
    caption = re.search(r'Caption: "(.*)"', text).group(1)
    lo, hi = (int(x) for x in re.search(r"English, (\d+) to (\d+) words", system).groups())
    keep = "keep that number" in system
    if fault == "moved" and fact_list:
        b = fact_list[0]["box_2d"]
        fact_list[0] = {**fact_list[0], "box_2d": [min(b[0] + 37, b[2] - 1), b[1], b[2], b[3]]}
    elif fault == "dropped" and fact_list:
        fact_list = fact_list[1:]
    return template_teacher.respond(caption, fact_list, lo, hi, keep)


class FakeTeacher(LoopbackChat):
    """The loopback server's behaviour with the teacher's replies by default."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default_reply = teacher_reply


if __name__ == "__main__":
    a = cli_args(__doc__)
    serve(FakeTeacher(a.latency, a.fault_rate, seed=a.seed), a.port)
