import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdg_data.answer import completion_text, parse_defect_list, parse_response, render_answer, render_response
from tests.conftest import defect


ITEM = {"box_2d": [100, 200, 300, 400], "label": "artifact", "description": "six fingers", "importance": 70}


def wrap(answer: str, think: str = "<think>reasoning</think>") -> str:
    return f"{think}\n<answer>{answer}</answer>"


def test_render_then_parse_round_trip():
    ds = [
        defect([1, 2, 300, 400], "artifact", "fused fingers", 55),
        defect([5, 5, 50, 50], "misalignment", "red", None),
    ]
    text = render_response("### Step 1: Caption Understanding\n...", ds)
    assert text.startswith("<think>\n### Step 1") and text.endswith("</answer>")
    res = parse_response(text)
    assert res.format_ok and res.reason is None and res.issues == []
    assert [(d.box.to_grid(), d.label, d.description, d.importance) for d in res.defects] == [
        ([1, 2, 300, 400], "artifact", "fused fingers", 55),
        ([5, 5, 50, 50], "misalignment", "red", None),
    ]
    assert "importance" not in json.loads(render_answer(ds))[1]


def test_clean_image_answer():
    res = parse_response(render_response("nothing wrong", []))
    assert res.format_ok and res.defects == [] and res.think == "nothing wrong"


def test_json_fence_and_text_around_tags():
    text = "Sure! <think>t</think> here you go <answer>\n```json\n" + json.dumps([ITEM]) + "\n```\n</answer> bye"
    res = parse_response(text)
    assert res.format_ok and res.defects[0].box.to_grid() == [100, 200, 300, 400]


def test_desc_alias_and_label_case():
    item = {"box_2d": [1, 2, 3, 4], "label": " Misalignment ", "desc": "wrong colour"}
    res = parse_response(wrap(json.dumps([item])))
    assert res.format_ok and res.defects[0].label == "misalignment" and res.defects[0].description == "wrong colour"


def test_yxyx_option():
    res = parse_response(wrap(json.dumps([{**ITEM, "box_2d": [200, 100, 400, 300]}])), order="yxyx")
    assert res.format_ok and res.defects[0].box.to_grid() == [100, 200, 300, 400]


@pytest.mark.parametrize(
    ("text", "reason", "n_defects"),
    [
        (f"<answer>{json.dumps([ITEM])}</answer>", "no <think> block", 1),
        ("<think>t</think> no answer here", "no <answer> block", 0),
        ("<think>t</think>" + json.dumps([ITEM]), "no <answer> block", 1),
        (wrap(""), "<answer> is empty", 0),
        ("<think>t</think><answer>" + json.dumps([ITEM, ITEM])[:-30], "<answer> is not closed", 1),
        (wrap('[{"box_2d": [1, 2, 3, 4], "label": "artifact", "description": "x"},, }'), "not valid JSON", 1),
        (wrap(json.dumps(ITEM)), "object, not a list", 1),
        (wrap('"no defects"'), "str, not a list", 0),
        (wrap("[1, 2]"), "item 0: not an object", 0),
        (wrap(json.dumps([{"label": "artifact", "description": "x"}])), "item 0: no box_2d", 0),
        (wrap(json.dumps([{**ITEM, "box_2d": [1, 2, 3]}])), "box_2d must be 4 numbers", 0),
        (wrap(json.dumps([{**ITEM, "box_2d": ["1", 2, 3, 4]}])), "box_2d must be 4 numbers", 0),
        (wrap(json.dumps([{**ITEM, "box_2d": [300, 200, 100, 400]}])), "inverted or empty", 0),
        (wrap(json.dumps([{**ITEM, "box_2d": [100, 200, 100, 400]}])), "inverted or empty", 0),
        (wrap(json.dumps([{"box_2d": [1, 2, 3, 4], "description": "x"}])), "item 0: no label", 0),
        (wrap(json.dumps([{**ITEM, "label": "both"}])), "unknown label 'both'", 0),
        (wrap(json.dumps([{"box_2d": [1, 2, 3, 4], "label": "artifact"}])), "item 0: no description", 1),
        (wrap(json.dumps([{**ITEM, "bbox_2d": ITEM["box_2d"], "box_2d": None}])), "'bbox_2d' instead", 1),
    ],
)
def test_malformed_outputs_never_raise(text, reason, n_defects):
    res = parse_response(text)
    assert not res.format_ok
    assert reason in res.reason
    assert len(res.defects) == n_defects


def test_truncated_list_keeps_complete_items():
    text = "<think>t</think><answer>[" + json.dumps(ITEM) + ', {"box_2d": [5, 5, 9'
    res = parse_response(text)
    assert not res.format_ok and len(res.defects) == 1
    assert any("recovered 1 complete item" in i for i in res.issues)


def test_python_literal_answer_is_salvaged_but_fails_format():
    res = parse_response(wrap(str([ITEM])))  # single quotes
    assert not res.format_ok and len(res.defects) == 1


def test_out_of_range_is_clamped_not_failed():
    res = parse_response(wrap(json.dumps([{**ITEM, "box_2d": [-20, 900, 300, 1040]}])))
    assert res.format_ok
    assert res.defects[0].box.to_grid() == [0, 900, 300, 1000]
    assert any("clamped" in i for i in res.issues)
    res = parse_response(wrap(json.dumps([{**ITEM, "box_2d": [1100, 0, 1200, 10]}])))
    assert res.format_ok and res.defects == [] and "outside the image" in res.issues[0]


@pytest.mark.parametrize(
    ("value", "expected", "note"),
    [
        (70, 70, None),
        (70.4, 70, None),
        ("85", 85, None),
        (0, 1, "clamped"),
        (250, 100, "clamped"),
        ("high", None, "not a number"),
        (None, None, None),
        ([5], None, "not a number"),
    ],
)
def test_importance_coercion(value, expected, note):
    res = parse_response(wrap(json.dumps([{**ITEM, "importance": value}])))
    assert res.format_ok
    assert res.defects[0].importance == expected
    if note:
        assert note in " ".join(res.issues)


def test_non_text_inputs():
    assert parse_response(None).reason == "no <think> block"
    conv = [{"role": "assistant", "content": wrap(json.dumps([ITEM]))}]
    assert completion_text(conv) == wrap(json.dumps([ITEM]))
    assert parse_response(conv).format_ok


def test_structured_defect_list():
    assert parse_defect_list([ITEM]).format_ok
    res = parse_defect_list("nope")
    assert not res.format_ok and "must be a list" in res.reason


@given(st.text(max_size=300))
def test_any_text_never_raises(text):
    res = parse_response(text)
    assert isinstance(res.format_ok, bool)


@given(st.text(alphabet='<>/[]{}":,0123456789 thinkanswerlbd_', max_size=200))
def test_tag_soup_never_raises(text):
    parse_response("<think>" + text)
    parse_response("<think></think><answer>" + text)


def test_truncated_answer_is_not_compiled_as_python(monkeypatch):
    """The Python-literal repair is only tried on a body that can hold a whole list; a cut-off one goes straight
    to salvaging complete items (compiling it would cost more than parsing the rest of the batch)."""
    import ast

    def boom(_):
        raise AssertionError("literal_eval called on a truncated answer")

    monkeypatch.setattr(ast, "literal_eval", boom)
    text = "<think>t</think><answer>[" + json.dumps(ITEM) + ", {'box_2d': [5, 5, 9"
    res = parse_response(text)
    assert not res.format_ok and len(res.defects) == 1
    assert res.issues[0].startswith("<answer> is not closed") and "answer is not valid JSON" in res.issues[1]
    assert res.issues[2] == "recovered 1 complete item(s) from the broken list"


@pytest.mark.parametrize(
    ("body", "n", "reason"),
    [
        ('[{"box_2d": [1, 2, 30, 40], "label": "artifact", "description": "x", "importance": NaN}]', 1, None),
        ('[{"box_2d": [1, 2, 30, 40], "label": "artifact", "description": "fence ``` inside"}]', 1, None),
        ('[{"box_2d": [1, 2, 30, 40], "label": "artifact", "description": "x"},]', 1, "not valid JSON"),
    ],
)
def test_json_beyond_the_fast_parser(body, n, reason):
    """What orjson rejects still gets the stdlib's reading (NaN) and wording (errors); a fence inside a string
    is text, not a fence."""
    res = parse_response(wrap(body))
    assert len(res.defects) == n
    assert (res.reason is None) if reason is None else (reason in res.reason)
