"""Trace replay on real (sliced) files: formats, detection, bad rows, replay options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tokenmill.workloads.config import TraceSource, Workload
from tokenmill.workloads.errors import WorkloadError
from tokenmill.workloads.generate import generate
from tokenmill.workloads.traces import csvread, detect_format, load_trace
from tokenmill.workloads.traces.timeparse import parse_datetime_ns, parse_datetimes_ns

DATA = Path(__file__).with_name("data")
AZURE = DATA / "azure2023_code_head300.csv"
AZURE_CONV = DATA / "azure2023_conv_head200.csv"
MOONCAKE = DATA / "mooncake_conversation_head300.jsonl"
MOONCAKE_SYN = DATA / "mooncake_synthetic_head100.jsonl"
BURST = DATA / "burstgpt_schema_sample.csv"
NATIVE = DATA / "tokenmill_native_sample.csv"


def load(path: Path, **kw) -> "object":
    limits = {k: kw.pop(k) for k in ("duration_s", "num_requests") if k in kw}
    return load_trace(TraceSource(path=str(path), **kw), **limits)


@pytest.mark.parametrize("path, fmt", [(AZURE, "azure"), (AZURE_CONV, "azure"),
                                       (MOONCAKE, "mooncake"), (MOONCAKE_SYN, "mooncake"),
                                       (BURST, "burstgpt"), (NATIVE, "tokenmill")])
def test_formats_are_detected_from_the_header(path: Path, fmt: str) -> None:
    assert detect_format(path) == fmt


def test_azure_rows_become_requests_exactly() -> None:
    a = load(AZURE)
    rows = AZURE.read_text().splitlines()[1:]
    assert len(a) == 300
    np.testing.assert_array_equal(a.prompt_tokens[:4], [4808, 3180, 110, 7433])
    np.testing.assert_array_equal(a.output_tokens[:4], [10, 8, 27, 14])
    assert a.arrival_s[0] == 0.0 and a.arrival_s[1] == 0.052  # 18:17:03.97996 -> 18:17:04.03196
    last = parse_datetime_ns(rows[-1].split(",")[0]) - parse_datetime_ns(rows[0].split(",")[0])
    assert a.arrival_s[-1] == last / 1e9
    assert a.prefix_ids is None and a.info.counts == {"rows": 300}


def test_mooncake_hash_ids_become_prefix_columns() -> None:
    a = load(MOONCAKE)
    rows = [json.loads(line) for line in MOONCAKE.read_text().splitlines()]
    assert len(a) == 300 and a.prefix_block_tokens == 512
    np.testing.assert_array_equal(a.prompt_tokens, [r["input_length"] for r in rows])
    np.testing.assert_array_equal(a.output_tokens, [r["output_length"] for r in rows])
    np.testing.assert_array_equal(a.arrival_s, [r["timestamp"] / 1e3 for r in rows])
    for i in (0, 1, 150, 299):
        np.testing.assert_array_equal(a.prefix_ids[a.prefix_offsets[i]:a.prefix_offsets[i + 1]],
                                      rows[i]["hash_ids"])
    assert a.prefix_offsets[-1] == sum(len(r["hash_ids"]) for r in rows)


def test_burstgpt_filters_and_failed_requests_are_counted() -> None:
    lines = [line.split(",") for line in BURST.read_text().splitlines()[1:]]
    a = load(BURST)
    assert len(a) == 27 and a.info.counts["excluded_failed"] == 3
    assert any("excluded 3 failed requests" in n for n in a.info.notes)
    gpt4 = load(BURST, model="gpt-4")
    expected = [r for r in lines if r[1] == "GPT-4" and r[3] != "0"]
    np.testing.assert_array_equal(gpt4.prompt_tokens, [int(r[2]) for r in expected])
    assert gpt4.info.counts["filtered_model"] == 20
    api = load(BURST, model="ChatGPT", log_type="api")
    expected = [r for r in lines if r[1] == "ChatGPT" and r[5] == "API log" and r[3] != "0"]
    np.testing.assert_array_equal(api.output_tokens, [int(r[3]) for r in expected])
    assert api.arrival_s[0] == 0.0
    np.testing.assert_array_equal(api.arrival_s, [float(r[0]) - float(expected[0][0]) for r in expected])
    with pytest.raises(WorkloadError, match="models present: ChatGPT, GPT-4"):
        load(BURST, model="claude")
    with pytest.raises(WorkloadError, match="filter BurstGPT traces; this one is azure"):
        load(AZURE, model="GPT-4")


def test_native_csv() -> None:
    a = load(NATIVE)
    ms = np.loadtxt(NATIVE, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(a.arrival_s, (ms[:, 0] / 1e3) - ms[0, 0] / 1e3)
    np.testing.assert_array_equal(a.prompt_tokens, ms[:, 1])


def test_unknown_format_lists_the_known_ones(tmp_path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("time,in,out\n1,2,3\n")
    with pytest.raises(WorkloadError) as info:
        load(odd)
    msg = str(info.value)
    for name in ("azure", "tokenmill", "mooncake", "burstgpt", "--trace-format"):
        assert name in msg
    with pytest.raises(WorkloadError, match="no such trace file"):
        load(tmp_path / "missing.csv")


def test_named_format_that_does_not_match_names_the_missing_columns(tmp_path) -> None:
    with pytest.raises(WorkloadError, match=r"needs column\(s\) 'TIMESTAMP', 'ContextTokens'"):
        load(NATIVE, format="azure")


@pytest.mark.parametrize("row, needle", [
    ("2023-11-16 18:17:04.0781490,abc,27", "line 4, field 'ContextTokens': not a whole number (got 'abc')"),
    ("2023-11-16 18:17:04.0781490,12,-3", "line 4, field 'GeneratedTokens': negative (got '-3')"),
    ("2023-11-16 25:17:04.0781490,12,3", "line 4, field 'TIMESTAMP': not a valid date and time"),
    ("yesterday,12,3", "line 4, field 'TIMESTAMP': not a date and time like"),
    ("2023-11-16 18:17:04.0781490,12", "line 4: has 2 fields; the header has 3"),
    ("2023-11-16 18:17:04.0781490,12,3,9", "line 4: has 4 fields; the header has 3"),
    ("2023-11-16 18:17:04.0781490,12.5,3", "field 'ContextTokens': not a whole number (got '12.5')"),
])
def test_malformed_csv_names_file_line_and_field(tmp_path, row: str, needle: str) -> None:
    lines = AZURE.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:3] + [row] + lines[3:10]) + "\n")
    with pytest.raises(WorkloadError) as info:
        load(bad)
    assert str(bad) in str(info.value) and needle in str(info.value)
    assert "--skip-bad-rows" in str(info.value)
    skipped = load(bad, skip_bad_rows=True)
    assert len(skipped) == 9 and skipped.info.counts["skipped_bad"] == 1
    assert any("skipped 1 malformed rows" in n and "line 4" in n for n in skipped.info.notes)


def test_malformed_jsonl_names_file_line_and_field(tmp_path) -> None:
    lines = MOONCAKE.read_text().splitlines()[:8]
    cases = {
        '{"timestamp": 5, "input_length": "12", "output_length": 3, "hash_ids": [1]}':
            "line 3, field 'input_length': not a whole number",
        '{"timestamp": 5, "input_length": 12, "hash_ids": [1]}': "line 3, field 'output_length': missing",
        '{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": [1.5]}':
            "line 3, field 'hash_ids': not a list of whole numbers",
        '{"timestamp": NaN, "input_length": 12, "output_length": 3, "hash_ids": []}':
            "line 3: not valid JSON",
        '{"timestamp": 5, "input_length": 12': "line 3: not valid JSON",
    }
    for row, needle in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text("\n".join(lines[:2] + [row] + lines[2:]) + "\n")
        with pytest.raises(WorkloadError) as info:
            load(bad)
        assert str(bad) in str(info.value) and needle in str(info.value), row
        skipped = load(bad, skip_bad_rows=True)
        assert len(skipped) == 8 and skipped.info.counts["skipped_bad"] == 1


def test_fast_and_careful_readers_agree(monkeypatch) -> None:
    fast = [load(p) for p in (AZURE, AZURE_CONV, BURST, NATIVE)]
    monkeypatch.setattr(csvread, "_fast", lambda *a, **k: None)
    slow = [load(p) for p in (AZURE, AZURE_CONV, BURST, NATIVE)]
    for a, b in zip(fast, slow):
        for name in ("arrival_s", "prompt_tokens", "output_tokens"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_mooncake_fast_and_careful_readers_agree(monkeypatch) -> None:
    from tokenmill.workloads.traces import mooncake
    fast = load(MOONCAKE)
    monkeypatch.setattr(mooncake, "_fast", lambda text: None)
    slow = load(MOONCAKE)
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "prefix_ids", "prefix_offsets"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


def test_timestamps_with_utc_offsets_and_zulu() -> None:
    texts = ["2024-05-10 00:00:00.0061040+00:00", "2024-05-10T02:00:01.5+02:00",
             "2024-05-10 00:00:02Z", "2024-05-09 19:00:03.25-05:00"]
    vec = parse_datetimes_ns(np.array(texts))
    one = [parse_datetime_ns(t) for t in texts]
    np.testing.assert_array_equal(vec, one)
    base = parse_datetime_ns("2024-05-10 00:00:00")
    np.testing.assert_array_equal((vec - base), [6_104_000, 1_500_000_000, 2_000_000_000, 3_250_000_000])
    assert parse_datetimes_ns(np.array(["2024-05-10 00:00:00", "NaT"])) is None


def test_zero_lengths_and_disorder_are_reported(tmp_path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("timestamp_ms,prompt_tokens,output_tokens\n0,10,5\n2000,10,0\n1000,0,5\n"
                 "1500,7,7\n500,3,3\n")
    a = load(f)
    np.testing.assert_array_equal(a.arrival_s, [0.0, 0.5, 1.5])
    np.testing.assert_array_equal(a.prompt_tokens, [10, 3, 7])
    assert a.info.counts == {"rows": 5, "excluded_zero_prompt": 1, "excluded_zero_output": 1,
                             "reordered": 1}
    assert any("not in time order" in n for n in a.info.notes)


def test_window_speedup_rate_repeat_and_limits() -> None:
    full = load(MOONCAKE)
    t = full.arrival_s
    win = load(MOONCAKE, start_s=10.0, end_s=60.0)
    inside = (t >= 10.0) & (t < 60.0)
    assert len(win) == inside.sum() and win.info.counts["outside_window"] == (~inside).sum()
    np.testing.assert_allclose(win.arrival_s, t[inside] - t[inside][0])
    np.testing.assert_array_equal(win.prompt_tokens, full.prompt_tokens[inside])
    first = np.flatnonzero(inside)[0]
    np.testing.assert_array_equal(win.prefix_ids[:win.prefix_offsets[1]],
                                  full.prefix_ids[full.prefix_offsets[first]:full.prefix_offsets[first + 1]])
    fast = load(MOONCAKE, speedup=4.0)
    np.testing.assert_allclose(fast.arrival_s, t / 4.0)
    rated = load(MOONCAKE, rate=20.0)
    assert (len(rated) - 1) / rated.arrival_s[-1] == pytest.approx(20.0, rel=1e-12)
    offline = load(MOONCAKE, rate=math.inf)
    assert (offline.arrival_s == 0).all()
    twice = load(MOONCAKE, repeat=2)
    assert len(twice) == 600
    gap = t[-1] / 299
    np.testing.assert_allclose(twice.arrival_s[300:], t + t[-1] + gap)
    assert (np.diff(twice.arrival_s) >= 0).all()
    stride = int(full.prefix_ids.max()) + 1
    np.testing.assert_array_equal(twice.prefix_ids[full.prefix_ids.size:], full.prefix_ids + stride)
    np.testing.assert_array_equal(twice.prefix_offsets[301:], full.prefix_offsets[1:] + full.prefix_offsets[-1])
    cut = load(MOONCAKE, duration_s=30.0, num_requests=50)
    assert len(cut) == 50 and cut.info.counts["over_limit"] > 0
    assert cut.info.counts["after_duration"] == (t >= 30.0).sum()
    with pytest.raises(WorkloadError, match="no requests in the window"):
        load(MOONCAKE, start_s=1e6)


def test_trace_workload_through_generate_and_describe() -> None:
    from tokenmill.workloads.describe import describe_workload
    w = Workload(trace={"path": str(MOONCAKE)})
    s = describe_workload(w)
    a = generate(w, 0)
    ids = a.prefix_ids
    assert s.requests == 300
    assert s.prefix["sharing_ratio"] == pytest.approx(1 - len(set(ids.tolist())) / len(ids))
    assert s.prefix["sharing_ratio"] > 0.05  # conversations reuse their history (8% here)
    gaps = np.diff(a.arrival_s)
    assert s.burstiness == pytest.approx(gaps.std() / gaps.mean())
    assert s.mean_rate == pytest.approx(299 / a.arrival_s[-1])
    text = s.to_text()
    assert "sharing ratio" in text and "300 over" in text


def test_mooncake_readers_agree_and_the_layout_reader_is_strict(tmp_path) -> None:
    from tokenmill.workloads.traces import mooncake
    data = MOONCAKE.read_bytes()
    layout = mooncake._released_layout(data)
    general = mooncake._fast(data.decode())
    assert layout is not None and general is not None
    for x, y in zip(layout, general):
        np.testing.assert_array_equal(x, y)
    for bad in (b'{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": []}',
                b'{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": [1, 2]}'):
        assert mooncake._released_layout(bad) is not None  # well-formed edge cases pass
    for bad in (b'{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": [,2]}',
                b'{"time5stamp": , "input_length": 12, "output_length": 3, "hash_ids": [2]}',
                b'{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": [1.5]}',
                b'{"timestamp": -5, "input_length": 12, "output_length": 3, "hash_ids": [1]}',
                b'{"input_length": 12, "timestamp": 5, "output_length": 3, "hash_ids": [1]}',
                b'{"timestamp": 5, "input_length": 12, "output_length": 3, "hash_ids": [99999999999999999999]}'):
        assert mooncake._released_layout(bad) is None, bad
    # another key order is still valid JSONL: the general reader takes it
    other = tmp_path / "other.jsonl"
    other.write_text('{"input_length": 12, "timestamp": 5, "output_length": 3, "hash_ids": [1]}\n')
    a = load(other)
    assert a.prompt_tokens.tolist() == [12] and a.prefix_ids.tolist() == [1]


def test_burstgpt_labels_beyond_ascii(tmp_path, monkeypatch) -> None:
    f = tmp_path / "b.csv"
    f.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "1,Ünïcode,5,5,10,API log\n2,GPT-4,5,6,11,API log\n3,模型, 7,8,15,API log\n",
                 encoding="utf-8")
    assert load(f, model="ünïcode").output_tokens.tolist() == [5]
    assert load(f, model="模型").prompt_tokens.tolist() == [7]
    assert load(f, model="GPT-4").info.counts["filtered_model"] == 2
