"""The append-only JSONL log behind every resumable cache."""

from pvlens.core.logs import AppendLog


def test_later_records_win_and_a_torn_line_is_cut_off(tmp_path):
    log = AppendLog(tmp_path / "log.jsonl", key="key")
    log.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    log.append([{"key": "a", "v": 3}])
    with open(log.path, "a") as handle:
        handle.write('{"key": "c", "v"')  # killed mid-write
    assert log.read() == {"a": {"key": "a", "v": 3}, "b": {"key": "b", "v": 2}}
    assert log.path.read_text().endswith("}\n")  # the torn tail is gone
    log.append([{"key": "c", "v": 4}])
    assert log.read()["c"] == {"key": "c", "v": 4}
