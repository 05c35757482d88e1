"""``lfqcodec info`` on a file of many chunks: the chunk table is made one row at a time as it is
written, text or JSON, so memory grows by the reader's 64 bytes a chunk, not a dict a chunk (issue
37: 4,000,000 tiny chunks took ``info`` past 3 GiB). Growth is measured at two sizes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc

import pytest
from click.testing import CliRunner

from lfqcodec.api import read_info
from lfqcodec.cli.commands import main
from lfqcodec.cli import info
from lfqcodec.cli.info import write_json, write_text
from lfqcodec.format.records import RECORD, record_header
from test_strict_reader import build, chunk, header


def many_chunks(path, count: int):
    """A valid 2.x file of ``count`` one-frame chunks (zstd bit planes), every one the same payload."""
    h = header(bytes(16), count, gop=1)
    template = chunk(h, 0, 0, coder=0)
    payload = template[RECORD.size + 4 :]
    raw = RECORD.unpack_from(template)[9]
    records = [record_header(0, 0, i, i, 0, i, 1, 1, raw, payload) + payload for i in range(count)]
    path.write_bytes(build(h, records))
    return path


class Counting(io.TextIOBase):
    """A stdout that keeps only the number of characters written."""

    def __init__(self):
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def _peak_bytes(path, writer) -> int:
    tracemalloc.start()
    try:
        writer(read_info(path), Counting())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("writer", [write_text, write_json])
def test_info_memory_grows_by_the_chunk_table_only(tmp_path, writer, monkeypatch):
    monkeypatch.setattr(info, "ROWS_PER_WRITE", 256)  # a block of rows is a constant; keep it below both sizes
    small, large = many_chunks(tmp_path / "s.lfq", 2000), many_chunks(tmp_path / "l.lfq", 10000)
    _peak_bytes(small, writer)  # first call: imports and caches
    growth = (_peak_bytes(large, writer) - _peak_bytes(small, writer)) / 8000
    assert growth < 160, f"{growth:.0f} bytes a chunk (a dict a chunk is about 1,000)"


def test_info_json_lists_every_chunk(tmp_path):
    path = many_chunks(tmp_path / "m.lfq", 300)
    data = json.loads(CliRunner().invoke(main, ["info", "--json", str(path)]).output)
    assert data["frame_count"] == 300 and data["coders"] == {"zstd bit planes": 300}
    assert [c["index"] for c in data["chunks"]] == list(range(300))
    assert data["chunks"] == list(read_info(path)["chunks"])
    text = CliRunner().invoke(main, ["info", str(path)]).output.splitlines()
    assert text[-1].split()[:2] == ["299", str(data["chunks"][-1]["offset"])] and len(text) == 11 + 300


def test_info_into_a_closed_pipe_stops_quietly(tmp_path):
    path = many_chunks(tmp_path / "p.lfq", 20000)
    shell = f"{sys.executable} -m lfqcodec.cli info --json {path} | head -c 100 > /dev/null"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120)
    assert result.stderr == "" and result.returncode in (0, 141), result.stderr
