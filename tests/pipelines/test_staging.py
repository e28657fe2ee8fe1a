"""Reading LLaVA files one record at a time: valid arrays and JSON-lines stream through, malformed files fail at
once with the file and the position."""

import json

import pytest

from pipelines.data.staging import InputFormatError, iter_records

RECORD = {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                         {"from": "gpt", "value": "a"}]}


def _records(path) -> list:
    return [json.loads(record.record) for record in iter_records(str(path))]


def test_arrays_and_json_lines_stream_through_even_with_elements_longer_than_a_read(tmp_path):
    long = {**RECORD, "id": "long", "conversations": [{"from": "human", "value": "q" * 3_000_000},
                                                      {"from": "gpt", "value": "a"}]}
    array = tmp_path / "data.json"
    array.write_text(json.dumps([RECORD, long, RECORD], indent=1))
    assert [record["id"] for record in _records(array)] == ["x", "long", "x"]
    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps(record) for record in (RECORD, long)) + "\n")
    assert [record["id"] for record in _records(lines)] == ["x", "long"]


def test_a_syntax_error_early_in_a_large_array_is_reported_at_its_position(tmp_path):
    path = tmp_path / "big.json"
    good = json.dumps(RECORD)
    with path.open("w") as out:  # ~20 MB after the error: it must not be read to report it
        out.write("[" + good + ", " + good + ', {"id": "broken" "image": 1}, ' + ", ".join([good] * 100_000) + "]")
    with pytest.raises(InputFormatError) as refused:
        _records(path)
    message = str(refused.value)
    assert str(path) in message and "after element 2" in message and "Expecting ',' delimiter" in message
    position = int(message.split("near character ")[1].split(" ")[0])
    assert position == len("[" + good + ", " + good + ', {"id": "broken" ')


@pytest.mark.parametrize(("text", "fragment"), [
    ("\ufeff" + json.dumps([RECORD]), "byte order mark"),
    (json.dumps({"data": [RECORD, RECORD]}, indent=2), "JSON object spread over lines"),
    (json.dumps([RECORD, RECORD])[:-40], "ends inside element 1 of the JSON array \\(is it truncated"),
    (json.dumps([RECORD, RECORD])[:-1], "is not closed"),
])
def test_a_malformed_file_fails_naming_the_file_and_the_problem(tmp_path, text, fragment):
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputFormatError, match=fragment) as refused:
        _records(path)
    assert str(path) in str(refused.value)


def test_a_json_lines_file_keeps_quarantining_a_bad_line_rather_than_failing(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(RECORD) + "\n{not json\n" + json.dumps(RECORD) + "\n")
    records = [record.record for record in iter_records(str(path))]
    assert records[1].startswith("invalid_json:") and json.loads(records[2])["id"] == "x"
