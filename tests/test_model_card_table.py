"""benchmarks/model_card_table.py: per-clip bench records merged and written between a file's markers."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("model_card_table", ROOT / "benchmarks" / "model_card_table.py")
mct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mct)


def _record(clip: str, sha: str = "ab" * 32) -> dict:
    def point(codec, setting, bpp, psnr, vmaf):
        return {"clip": clip, "codec": codec, "setting": setting, "device": "cpu", "width": 64, "height": 48,
                "bpp": bpp, "psnr_rgb": psnr, "ms_ssim_y": 0.9, "vmaf": vmaf}  # fmt: skip

    points = [point("lfqcodec", q, b, 25 + i, 30 + 10 * i) for i, (q, b) in enumerate([("low", 0.01), ("medium", 0.03), ("high", 0.05)])]
    points += [point("x265", f"crf{c}", b, 30 + i, 50 + 10 * i) for i, (c, b) in enumerate([(51, 0.011), (37, 0.029), (27, 0.08)])]
    return {"date": "2026-11-29T00:00:00+00:00", "command": f"lfqcodec bench {clip}", "machine": {"cpu_cores": 2},
            "model": {"name": "lfq-base", "sha256": sha}, "settings": {"frames": 33, "gop": 33},
            "vmaf": {"model": "vmaf_v0.6.1", "libvmaf": "x", "rgb_to_yuv": {"matrix": "bt601", "range": "limited (..)"}},
            "points": points, "pictures": [{"clip": clip}],
            "bd_rate_vs_x265": {clip: {m: {"bd_rate_percent": None, "note": "no overlap"}
                                       for m in ("psnr_rgb", "psnr_y", "ms_ssim_y", "vmaf")}}}  # fmt: skip


def test_merge_orders_clips_and_refuses_mixed_weights():
    merged = mct.merge([_record("bikes.mp4"), _record("armwrestling.mp4")])
    assert [p["clip"] for p in merged["points"]][::6] == ["armwrestling.mp4", "bikes.mp4"]
    assert list(merged["bd_rate_vs_x265"]) == ["armwrestling.mp4", "bikes.mp4"] and len(merged["pictures"]) == 2
    with pytest.raises(SystemExit, match="different weights"):
        mct.merge([_record("bikes.mp4"), _record("kitten.mp4", sha="cd" * 32)])


def test_tables_are_written_between_markers_only(tmp_path):
    record = mct.merge([_record("armwrestling.mp4"), _record("bikes.mp4")])
    (tmp_path / "bench.json").write_text(json.dumps(record))
    (tmp_path / "model_stats.json").write_text(json.dumps({"encoder_parameters": 10, "decoder_parameters": 5,
        "encode_flops_per_pixel": 2000.0, "decode_flops_per_pixel": 1000.0, "measured_on": "17 frames"}))  # fmt: skip
    record["_path"] = str(tmp_path / "bench.json")
    card = tmp_path / "card.md"
    card.write_text("intro\n<!-- results table (full): begin -->\nold\n<!-- results table: end -->\nmiddle\n"
                    "<!-- results table (stats): begin -->\n<!-- results table: end -->\nend\n")  # fmt: skip
    assert mct.rewrite(card, record, mct.NOTES) == 2
    text = card.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n") and "\nold\n" not in text
    assert "| armwrestling 64x48 (held out) | low | 0.0100 | 25.00 | 0.900 | 30.0 | CRF 51 | 0.0110 |" in text
    assert "(selection clip)" in text and "| parameters | 15 (encoder 10, decoder 5) |" in text
    assert "| bikes | no overlap | no overlap | no overlap |" in text
