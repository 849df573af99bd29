"""sdg refine: the editor's inputs (instruction and overlay, hand-checked), each mode, the image-edit API against a
loopback server with faults and resume, the local diffusers backend on a tiny FLUX.1 Kontext, predictions + images."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdg_data.boxes import Box
from sdg_data.io.files import write_records
from sdg_data.records import Defect, ImageRecord
from train.refine import Job, RefineConfig, instruction, overlay, refine


SDG = str(Path(sys.executable).parent / "sdg")


def _png(color=(255, 255, 255), size=(100, 100)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _job(defects) -> Job:
    text = '<answer>[{"box_2d": [0, 0, 500, 500], "label": "artifact"}]</answer>'
    return Job("x", "a white room", defects, text, _png(), (100, 100))


def test_instruction_and_overlay_for_a_fixed_case():
    job = _job([Defect(Box(0, 0, 500, 500), "artifact", "a melted chair", 70)])
    text = instruction(job, "boxes+text", None)
    assert "Description: a white room" in text and text.rstrip().endswith(job.text)
    assert "{caption}" not in text and "{defects}" not in text
    plain = instruction(job, "caption-only", None)
    assert "a white room" in plain and "<answer>" not in plain  # the "Fixed" baseline: the caption only
    png = overlay(job, "boxes+text")
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    assert tuple(px[40, 49]) == (230, 40, 40) and tuple(px[49, 40]) == (230, 40, 40)  # the box's right / bottom edge
    assert tuple(px[80, 80]) == (255, 255, 255) and tuple(px[30, 30]) == (255, 255, 255)  # outside and inside
    assert (px[:14, :40] == (230, 40, 40)).all(axis=-1).sum() > 100  # the label tag "1 A 70" at the top left
    assert overlay(job, "text-only") is None and overlay(job, "caption-only") is None
    with pytest.raises(ValueError, match="heatmap"):
        overlay(job, "heatmap+text")


@pytest.fixture()
def records(tmp_path):
    (tmp_path / "img").mkdir()
    recs = []
    for i in range(5):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(tmp_path / "img" / f"{i}.png")
        defects = [] if i == 4 else [Defect(Box(100, 100, 600, 500), "artifact", f"flaw {i}", 60)]
        recs.append(ImageRecord(f"r{i}", defects, image_path=f"img/{i}.png", width=64, height=64,
                                caption=f"picture {i}"))  # fmt: skip
    write_records(tmp_path / "recs.jsonl", recs)
    return tmp_path / "recs.jsonl"


@pytest.mark.parametrize("mode", ["boxes+text", "text-only", "caption-only"])
def test_each_mode_writes_its_request_bundle(records, tmp_path, mode):
    out = tmp_path / f"dry-{mode}"
    s = refine(records, out, RefineConfig(mode=mode, backend="dry-run"))
    assert (s["read"], s["kept"], s["rejected"], s["clean_skipped"]) == (5, 4, 0, 1)
    folder = out / "requests" / f"r0.{mode.replace('+', '_')}"
    assert (folder / "original.png").is_file() and (folder / "overlay.png").is_file() == (mode == "boxes+text")
    req = json.loads((folder / "request.json").read_text())
    assert req["mode"] == mode and req["images"][0] == "original.png"
    assert ("flaw 0" in (folder / "instruction.txt").read_text()) == (mode != "caption-only")
    rows = [json.loads(x) for x in (out / "refined.jsonl").read_text().splitlines()]
    assert [r["provenance"]["source_image_id"] for r in rows] == ["r0", "r1", "r2", "r3"]


def test_heatmap_mode_uses_the_records_heatmaps(tmp_path):
    (tmp_path / "maps").mkdir()
    Image.new("RGB", (32, 32), (10, 10, 10)).save(tmp_path / "a.png")
    heat = np.zeros((16, 16), np.uint8)
    heat[:8, :8] = 255
    Image.fromarray(heat).save(tmp_path / "maps" / "a.artifact.png")
    maps = {"heatmaps": {"artifact": "maps/a.artifact.png"}}
    rec = ImageRecord("a", [Defect(Box(0, 0, 500, 500), "artifact", "marked", 90)], image_path="a.png", width=32,
                      height=32, caption="x", provenance=maps)  # fmt: skip
    plain = ImageRecord("b", [Defect(Box(0, 0, 500, 500), "artifact", "marked", 90)], image_path="a.png", width=32,
                        height=32, caption="x")  # fmt: skip
    write_records(tmp_path / "r.jsonl", [rec, plain])
    s = refine(tmp_path / "r.jsonl", tmp_path / "o", RefineConfig(mode="heatmap+text", backend="dry-run"))
    assert s["kept"] == 1 and s["rejected"] == 1
    ov = np.asarray(Image.open(tmp_path / "o" / "requests" / "a.heatmap_text" / "overlay.png"), dtype=int)
    assert ov[4, 4, 0] > 100 and ov[28, 28, 0] == 10  # red where the map is hot, the image elsewhere
    rej = json.loads((tmp_path / "o" / "refine.rejects.jsonl").read_text().splitlines()[0])
    assert rej["image_id"] == "b" and "heatmap" in rej["reason"]


def test_api_backend_with_faults_resumes_and_never_writes_the_key(records, tmp_path, monkeypatch):
    from sdg_data.testkit.image_server import LoopbackEditor, LoopbackEditServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-refine-secret-424242")
    out = tmp_path / "api"
    editor = LoopbackEditor(latency=0.02, fault_rate=0.4, faults=("500", "timeout", "malformed"), hang_s=1.0)
    with LoopbackEditServer(editor) as srv:
        base = {"base_url": srv.base_url, "timeout_s": 0.5, "max_retries": 6, "backoff_base_s": 0.01,
                "backoff_max_s": 0.05, "input_price_per_mtok": 5.0, "output_price_per_mtok": 40.0}  # fmt: skip
        first = refine(records, out, RefineConfig(limit=2, **base))  # a run cut short ...
        assert first["kept"] == 2 and first["left_out_by_limit"] == 2
        asked = dict(editor.requests)
        s = refine(records, out, RefineConfig(**base))  # ... and the rerun does only the rest
    assert (s["read"], s["kept"], s["rejected"], s["resumed"]) == (5, 4, 0, 2)
    assert all(editor.requests[i] == asked[i] for i in asked)  # nothing finished was asked again
    assert s["faults"] and s["requests"] > 2 and s["input_tokens"] > 0 and s["cost"] > 0
    ok = [e for e in editor.log if e["fault"] is None]
    assert all(e["images"] == 2 and "picture" in e["prompt"] for e in ok)  # original + overlay, the caption
    rows = [json.loads(x) for x in (out / "refined.jsonl").read_text().splitlines()]
    for r in rows:
        edited = np.asarray(Image.open(out / r["image_path"]).convert("RGB"), dtype=int)
        assert edited[0, 0, 1] > 90  # the loopback editor's green tint: the edit came back and was stored
    for f in out.rglob("*"):
        if f.is_file():
            assert b"sk-refine-secret" not in f.read_bytes(), f


def test_local_backend_on_a_tiny_flux_kontext(records, tmp_path):
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    model = save_tiny_pipelines(tmp_path / "models", ["flux1-kontext"])["flux1-kontext"]
    recipe = tmp_path / "refine.yaml"
    recipe.write_text("backend: diffusers\nsteps: 2\ncall_kwargs: {_auto_resize: false, max_sequence_length: 64}\n")
    res = subprocess.run([SDG, "refine", str(records), "--out", str(tmp_path / "o"), "--model", str(model),
                          "--config", str(recipe), "--limit", "2"], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "o" / "refined.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all((tmp_path / "o" / r["image_path"]).is_file() for r in rows)
    assert rows[0]["provenance"]["backend"] == "diffusers" and rows[0]["width"] == 64


def test_predictions_join_their_images(records, tmp_path):
    pred = tmp_path / "pred.jsonl"
    rows = [{"image_id": "r1", "caption": "picture 1", "response": '<think>t</think><answer>[{"box_2d": [0, 0, 500, '
             '500], "label": "misalignment", "description": "no cat", "importance": 40}]</answer>'},
            {"image_id": "ghost", "defects": []}]  # fmt: skip
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = refine(pred, tmp_path / "o", RefineConfig(backend="dry-run", images=str(records)))
    assert (s["read"], s["kept"], s["rejected"]) == (2, 1, 1)
    text = (tmp_path / "o" / "requests" / "r1.boxes_text" / "instruction.txt").read_text()
    assert "<think>t</think>" in text and "no cat" in text  # the detector's full text goes to the editor
    with pytest.raises(ValueError, match="--images"):
        refine(pred, tmp_path / "o2", RefineConfig(backend="dry-run"))


def test_heatmaps_go_through_the_same_root_check_as_the_image(tmp_path):
    """A heatmap path outside the allowed roots, a FIFO (which would hang a read) and a non-image are rejects that
    name the record and the field; the outside file is never read into an overlay."""
    import os

    work, outside = tmp_path / "work", tmp_path / "private"
    work.mkdir()
    outside.mkdir()
    Image.new("RGB", (32, 32), (10, 10, 10)).save(work / "a.png")
    Image.new("L", (16, 16), 255).save(outside / "secret.png")
    os.mkfifo(work / "fifo.png")
    (work / "text.png").write_text("not an image")
    cases = {
        "out": "../private/secret.png",
        "fifo": "fifo.png",
        "text": "text.png",
        "abs": str(outside / "secret.png"),
    }
    recs = [
        ImageRecord(k, [Defect(Box(0, 0, 500, 500), "artifact", "marked", 90)], image_path="a.png", width=32,
                    height=32, caption="x", provenance={"heatmaps": {"artifact": v}})
        for k, v in cases.items()
    ]  # fmt: skip
    write_records(work / "r.jsonl", recs)
    s = refine(work / "r.jsonl", tmp_path / "o", RefineConfig(mode="heatmap+text", backend="dry-run"))
    assert s["kept"] == 0 and s["rejected"] == 4
    rej = {
        json.loads(x)["image_id"]: json.loads(x)["reason"]
        for x in (tmp_path / "o" / "refine.rejects.jsonl").read_text().splitlines()
    }
    assert all("field 'provenance.heatmaps'['artifact']" in r for r in rej.values()), rej
    assert "outside the allowed image root" in rej["out"] and "outside the allowed image root" in rej["abs"]
    assert "not a file" in rej["fifo"]


def test_an_edit_is_stored_as_its_pixels_alone(records, tmp_path, monkeypatch):
    """An editor's reply carrying text chunks (one once held the key the server saw) and data after IEND is stored
    re-encoded from its decoded pixels: no chunk but the image's, nothing after IEND, the key nowhere."""
    from PIL import PngImagePlugin

    import sdg_data.testkit.image_server as srv_mod
    from sdg_data.testkit.image_server import LoopbackEditor, LoopbackEditServer

    key = "sk-refine-echo-777777"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    plain = srv_mod.tint

    def chatty(png: bytes) -> bytes:
        with Image.open(io.BytesIO(plain(png))) as im:
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", f"seen Authorization: Bearer {key}")
            buf = io.BytesIO()
            im.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue() + b"trailing " + key.encode()

    monkeypatch.setattr(srv_mod, "tint", chatty)
    with LoopbackEditServer(LoopbackEditor()) as srv:
        s = refine(records, tmp_path / "o", RefineConfig(base_url=srv.base_url, limit=2, backoff_base_s=0.01))
    assert s["kept"] == 2
    for f in (tmp_path / "o" / "edits").iterdir():
        data = f.read_bytes()
        assert b"tEXt" not in data and key.encode() not in data and data.endswith(b"IEND\xaeB`\x82"), f
        assert np.asarray(Image.open(f).convert("RGB"))[0, 0, 1] > 90  # the edit's pixels are what was kept


def test_a_rerun_with_other_settings_never_reuses_the_folders_edits(records, tmp_path):
    """Edits finished in one mode or backend are not taken for another's: a rerun into the same --out with other
    settings is refused with what differs; the same settings resume; the first run's outputs are untouched."""
    out = tmp_path / "o"
    first = refine(records, out, RefineConfig(mode="boxes+text", backend="dry-run"))
    kept = (out / "refined.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"other settings \(mode 'boxes\+text' -> 'text-only'\)"):
        refine(records, out, RefineConfig(mode="text-only", backend="dry-run"))
    with pytest.raises(ValueError, match="backend 'dry-run' -> 'openai'"):
        refine(records, out, RefineConfig(mode="boxes+text", backend="openai", model="m"))
    assert (out / "refined.jsonl").read_bytes() == kept
    again = refine(records, out, RefineConfig(mode="boxes+text", backend="dry-run"))
    assert again["resumed"] == first["kept"] == 4


def test_an_editor_reply_nested_past_any_parser_is_a_retried_fault(records, tmp_path):
    from sdg_data.testkit.image_server import LoopbackEditor, LoopbackEditServer

    editor = LoopbackEditor(fault_rate=0.5, faults=("deep",), seed=3)
    with LoopbackEditServer(editor) as srv:
        s = refine(records, tmp_path / "o", RefineConfig(base_url=srv.base_url, max_retries=8, backoff_base_s=0.01,
                                                         backoff_max_s=0.02))  # fmt: skip
    assert editor.injected["deep"] > 0 and s["faults"].get("malformed") == editor.injected["deep"]
    assert s["kept"] == 4 and s["rejected"] == 0
