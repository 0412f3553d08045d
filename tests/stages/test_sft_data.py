import random

import pytest

from selflengthen.config import parse_config
from selflengthen.fingerprint import Fingerprint
from selflengthen.datasets import dataset_exists, read_manifest, read_records, write_records
from selflengthen.errors import DataError
from selflengthen.records import SftExample
from selflengthen.stages.sft_data import drop_lines, run_sft_data, sft_examples
from selflengthen.storage import get_storage
from tests.stages.helpers import response

CONFIG = parse_config({"model": {"base": "unused"}})
INITIAL = "\n".join(f"Line {i} of the draft." for i in range(40))
EXTENDED = INITIAL + "\n\nA long new ending."


def extended_response(index=0):
    return response(EXTENDED, kind="extended", index=index, initial_text=INITIAL, initial_words=200)


def test_drop_lines_rate_and_floor():
    rng = random.Random(0)
    kept = drop_lines(INITIAL, 0.2, rng).split("\n")
    assert 20 <= len(kept) <= 39
    assert all(line in INITIAL.split("\n") for line in kept)
    assert drop_lines("only line", 0.99, random.Random(1)) == "only line"


def test_examples_for_both_roles():
    generator, extender = sft_examples(extended_response(), CONFIG)
    assert generator.role == "generator" and extender.role == "extender"
    assert [m.role for m in generator.messages] == ["user", "assistant"]
    assert generator.messages[0].content == "Write about rivers."
    assert generator.response == extender.response == EXTENDED
    prompt = extender.messages[0].content
    assert "Write about rivers." in prompt
    draft_lines = [line for line in INITIAL.split("\n") if line in prompt]
    assert 20 <= len(draft_lines) < 40  # line dropout 0.2 applied to the initial response
    assert sft_examples(extended_response(), CONFIG) == (generator, extender)  # seeded


def test_rejects_non_extended():
    with pytest.raises(DataError, match="record .* is not an extended response"):
        sft_examples(response("Short."), CONFIG)


def test_run_writes_two_datasets_and_accumulates(tmp_path):
    storage = get_storage(CONFIG.storage)
    first, second = str(tmp_path / "it1"), str(tmp_path / "it2")
    write_records(storage, first, [extended_response(0)], stage="select", fingerprint=Fingerprint.of({}), shard_size=4)
    write_records(storage, second, [extended_response(1), extended_response(2)], stage="select", fingerprint=Fingerprint.of({}), shard_size=4)
    uris = run_sft_data(CONFIG, extended=second, output=str(tmp_path / "sft"), iteration=2)
    assert len(read_records(storage, uris["generator"], SftExample)) == 2
    both = run_sft_data(CONFIG, extended=[first, second], output=str(tmp_path / "sft-all"), iteration=2)
    examples = read_records(storage, both["extender"], SftExample)
    assert len(examples) == 3 and {e.role for e in examples} == {"extender"}


def test_streaming_writes_the_same_examples_as_one_per_input_record_across_parts(tmp_path):
    storage = get_storage(CONFIG.storage)
    first, second = str(tmp_path / "it1"), str(tmp_path / "it2")
    inputs = [[extended_response(i) for i in range(3)], [extended_response(i) for i in range(3, 5)]]
    for uri, records in zip((first, second), inputs):
        write_records(storage, uri, records, stage="select", fingerprint=Fingerprint.of({}), shard_size=1)  # a part per record
    uris = run_sft_data(CONFIG.model_copy(update={"storage": CONFIG.storage.model_copy(update={"shard_size": 2})}), extended=[first, second], output=str(tmp_path / "sft"))
    expected = [sft_examples(record, CONFIG) for records in inputs for record in records]
    for index, role in enumerate(("generator", "extender")):
        assert read_records(storage, uris[role], SftExample) == [pair[index] for pair in expected]
        assert len(read_manifest(storage, uris[role]).shards) == 3  # written 2 per part as it went


def test_a_record_in_two_inputs_is_refused_and_no_dataset_is_written(tmp_path):
    storage = get_storage(CONFIG.storage)
    first, second = str(tmp_path / "it1"), str(tmp_path / "it2")
    write_records(storage, first, [extended_response(0)], stage="select", fingerprint=Fingerprint.of({}), shard_size=1)
    write_records(storage, second, [extended_response(1), extended_response(0)], stage="select", fingerprint=Fingerprint.of({}), shard_size=1)
    with pytest.raises(DataError, match=r"it2: duplicate id .* \(also in .*it1\)"):
        run_sft_data(CONFIG, extended=[first, second], output=str(tmp_path / "sft"))
    assert not dataset_exists(storage, str(tmp_path / "sft" / "generator"))
