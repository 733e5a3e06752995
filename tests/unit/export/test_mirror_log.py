import gzip

from stream.export.mirror import Mutation, Op
from stream.export.mirror_log import decode, encode, hour_prefix, log_key, merge

HOUR = 1709967600000   # 2024-03-09T07:00Z


def test_an_hours_objects_sit_under_the_bucket_level_log_prefix_by_project_day_and_hour():
    assert hour_prefix("_stream/mirror/", 42, HOUR) == "_stream/mirror/42/2024-03-09_7/"
    assert log_key("_stream/mirror/", 42, HOUR, 3, 1234) == "_stream/mirror/42/2024-03-09_7/3-00000000000000001234.jsonl.gz"


def test_a_batch_encodes_to_the_same_bytes_each_time_and_reads_back_as_it_was():
    muts = [Mutation("a", Op.UPDATE, (7, "k", 1), None, {"event_type": "x", "$insert_id": "a"}),
            Mutation("b", Op.DELETE, (7, "k", 2), "dev-1")]
    data = encode(muts)
    assert data == encode(muts)
    assert gzip.decompress(data) == (b'{"seq":[7,"k",1],"op":"UPDATE","insert_id":"a","row":{"event_type":"x","$insert_id":"a"}}\n'
                                     b'{"seq":[7,"k",2],"op":"DELETE","insert_id":"b","device_id":"dev-1"}\n')
    assert decode(data) == muts
    assert list(decode(data)[0].row) == ["event_type", "$insert_id"]


def test_merging_keeps_each_mutation_once_in_the_order_they_apply():
    a1 = Mutation("a", Op.UPDATE, (9, "k", 1), None, {"n": 1})
    a0 = Mutation("a", Op.DELETE, (3, "k", 5))
    b = Mutation("b", Op.DELETE, (9, "k", 1), "d")
    assert merge([[a1, b], [a0, a1], [b]]) == [a0, a1, b]
