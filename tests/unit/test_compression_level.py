"""kafka.compression_level: the record batches aiokafka builds carry the codec's bytes at the configured level."""

import asyncio
import gzip
import logging

import aiokafka.codec
import aiokafka.record.default_records as py_records
import cramjam
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch, _DefaultRecordBatchBuilderPy

import stream.kafka
from stream.errors import ConfigError
from stream.kafka import CompressionLevelUnsupported, apply_compression_level, set_compression_level
from stream.settings import KafkaSettings, load_settings
from tests.unit.worker_start import start_worker

CODECS = {"gzip": 1, "lz4": 3, "zstd": 4}     # codec -> its id in a record batch's attributes
HEADER = 61                                     # a v2 record batch's header; the records section follows it
MODULES = [py_records]
try:
    import aiokafka.record._crecords.default_records as c_records
    MODULES.append(c_records)
except ImportError:  # aiokafka without its extensions
    pass


@pytest.fixture(autouse=True)
def aiokafka_encoders(monkeypatch):
    """aiokafka's own encoders in the builders' modules for the test (another test of the process may have set a
    level); what was there, and stream.kafka's record of what it applied, put back after it."""
    for m in MODULES:
        for codec in CODECS:
            monkeypatch.setattr(m, f"{codec}_encode", getattr(aiokafka.codec, f"{codec}_encode"))
    monkeypatch.setattr(stream.kafka, "_APPLIED", [])
    monkeypatch.setattr(stream.kafka, "_ORIGINAL", {})


def _records(n: int = 300) -> list[tuple[bytes, bytes]]:
    return [(f"device-{i % 7}".encode(), (f'{{"event_type":"e{i % 13}","n":{i},"user":"u{i % 29}",' + '"pad":"'
                                          + "abcdefgh" * (i % 5) + '"}').encode()) for i in range(n)]


def _built(builder_cls, codec_id: int, records) -> bytes:
    b = builder_cls(2, codec_id, 0, -1, -1, 0, 1 << 20)
    for i, (k, v) in enumerate(records):
        assert b.append(i, 1_700_000_000_000 + i, k, v, []) is not None
    return bytes(b.build())


def _producer_batch(codec_id: int, records) -> bytes:
    """A batch as aiokafka's producer builds it (and stream.dedup.table's changelog batches)."""
    b = BatchBuilder(1 << 20, codec_id)
    for k, v in records:
        assert b.append(timestamp=1_700_000_000_000, key=k, value=v) is not None
    return bytes(b._build())


def _read(batch: bytes) -> list[tuple[bytes, bytes]]:
    return [(r.key, r.value) for r in DefaultRecordBatch(batch)]


@pytest.mark.parametrize("level", [-1, 1, 2, 3, 7, 19])
def test_a_producer_batch_carries_zstd_at_the_level_set_and_reads_back(level):
    recs = _records()
    raw = _producer_batch(0, recs)[HEADER:]
    set_compression_level("zstd", level)
    batch = _producer_batch(CODECS["zstd"], recs)
    assert batch[HEADER:] == bytes(cramjam.zstd.compress(raw, level=level))
    assert bytes(cramjam.zstd.decompress(batch[HEADER:])) == raw
    assert _read(batch) == recs


def test_the_levels_of_the_test_make_different_bytes():
    """The exact checks above could not tell a level from another if the records compressed alike."""
    raw = _producer_batch(0, _records())[HEADER:]
    outs = {lv: bytes(cramjam.zstd.compress(raw, level=lv)) for lv in (-1, 1, 2, 3, 7, 19)}
    assert len(set(outs.values())) == 6


@pytest.mark.parametrize("builder", [_DefaultRecordBatchBuilderPy, py_records.DefaultRecordBatchBuilder])
def test_both_of_aiokafkas_builders_compress_at_the_level(builder):
    recs = _records()
    raw = _built(builder, 0, recs)[HEADER:]
    set_compression_level("zstd", 1)
    assert _built(builder, CODECS["zstd"], recs)[HEADER:] == bytes(cramjam.zstd.compress(raw, level=1))


def test_lz4_at_the_level_set():
    recs = _records()
    raw = _producer_batch(0, recs)[HEADER:]
    set_compression_level("lz4", 1)
    batch = _producer_batch(CODECS["lz4"], recs)
    assert batch[HEADER:] == aiokafka.codec.lz4_encode(raw, level=1)
    assert batch[HEADER:] != aiokafka.codec.lz4_encode(raw)      # aiokafka's own, level 9
    assert _read(batch) == recs


def test_gzip_at_the_level_set():
    recs = _records()
    raw = _producer_batch(0, recs)[HEADER:]
    set_compression_level("gzip", 1)
    body = _producer_batch(CODECS["gzip"], recs)[HEADER:]
    want = aiokafka.codec.gzip_encode(raw, compresslevel=1)
    # bytes 4 to 8 of a gzip member are the time it was written
    assert body[:4] + body[8:] == want[:4] + want[8:]
    assert body[8:] != aiokafka.codec.gzip_encode(raw)[8:]       # aiokafka's own, level 9
    assert gzip.decompress(body) == raw


def test_no_level_puts_aiokafkas_encoder_back():
    set_compression_level("zstd", 1)
    set_compression_level("zstd", None)
    for m in MODULES:
        assert m.zstd_encode is aiokafka.codec.zstd_encode
    recs = _records()
    raw = _producer_batch(0, recs)[HEADER:]
    assert _producer_batch(CODECS["zstd"], recs)[HEADER:] == bytes(cramjam.zstd.compress(raw, level=3))


def test_apply_sets_the_level_of_the_settings_once_and_logs_it(caplog):
    caplog.set_level(logging.INFO, "stream.kafka")
    apply_compression_level(KafkaSettings())
    apply_compression_level(KafkaSettings())
    assert [r.getMessage() for r in caplog.records] == [
        "batches produced with zstd at level 2 (kafka.compression_level)"]
    for m in MODULES:
        assert m.zstd_encode(b"x" * 1000) == bytes(cramjam.zstd.compress(b"x" * 1000, level=2))
    caplog.clear()
    apply_compression_level(KafkaSettings(compression_level=None))
    apply_compression_level(KafkaSettings(compression_type="lz4"))
    apply_compression_level(KafkaSettings(compression_type="none"))
    assert [r.getMessage() for r in caplog.records] == [
        "batches produced with zstd at level 3 (kafka.compression_level null: aiokafka's default)",
        "batches produced with lz4 at level 9 (kafka.compression_level null: aiokafka's default)",
        "batches produced uncompressed (kafka.compression_type none)"]
    for m in MODULES:
        assert m.zstd_encode is aiokafka.codec.zstd_encode
        assert m.lz4_encode is aiokafka.codec.lz4_encode


def test_every_producer_built_here_applies_the_level():
    async def build() -> None:
        stream.kafka.producer(KafkaSettings(compression_level=5))    # not started: no connection
    asyncio.run(build())
    for m in MODULES:
        assert m.zstd_encode(b"y" * 1000) == bytes(cramjam.zstd.compress(b"y" * 1000, level=5))


def _refusal(module: str, why: str, level: int = 2) -> str:
    return (f"kafka.compression_level is {level}, but aiokafka {aiokafka.__version__}'s record batch builder "
            f"({module}) {why}; set kafka.compression_level to null (compression_level: null in the configuration "
            "file, or STREAM_KAFKA__COMPRESSION_LEVEL=null; aiokafka then compresses at its own level), or install "
            "the aiokafka of requirements.lock")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_a_builder_module_without_the_encoder_is_refused_and_nothing_is_changed(monkeypatch, module):
    monkeypatch.delattr(module, "zstd_encode")
    with pytest.raises(CompressionLevelUnsupported) as e:
        set_compression_level("zstd", 2)
    assert str(e.value) == _refusal(module.__name__, "has no zstd_encode to replace with one bound to the level")
    assert isinstance(e.value, ConfigError)
    for m in MODULES:
        assert getattr(m, "zstd_encode", None) in (None, aiokafka.codec.zstd_encode)
    assert stream.kafka._APPLIED == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_no_level_needs_nothing_of_aiokafka(monkeypatch, module, caplog):
    """What the refusal tells to do works: with the level unset, start-up asks nothing of aiokafka's internals."""
    caplog.set_level(logging.INFO, "stream.kafka")
    monkeypatch.delattr(module, "zstd_encode")
    apply_compression_level(KafkaSettings(compression_level=None))
    assert not hasattr(module, "zstd_encode")
    assert [r.getMessage() for r in caplog.records] == [
        "batches produced with zstd at level 3 (kafka.compression_level null: aiokafka's default)"]


def _builder_compressing_with(monkeypatch, compress) -> None:
    """aiokafka's builder made the pure-Python module's, compressing a batch's records with ``compress``."""
    class Builder(_DefaultRecordBatchBuilderPy):
        def _maybe_compress(self):
            data = bytes(self._buffer[self.HEADER_STRUCT.size:])
            self._buffer[self.HEADER_STRUCT.size:] = compress(data)
            return True

    Builder.__module__ = py_records.__name__
    monkeypatch.setattr(py_records, "DefaultRecordBatchBuilder", Builder)


def test_a_builder_that_does_not_call_its_modules_encoder_is_refused(monkeypatch):
    own = aiokafka.codec.zstd_encode

    _builder_compressing_with(monkeypatch, own)    # an encoder of its own, not the module's
    with pytest.raises(CompressionLevelUnsupported) as e:
        set_compression_level("zstd", 2)
    assert str(e.value) == _refusal(py_records.__name__, "does not call its module's zstd_encode to compress a "
                                    "batch, so the level cannot be set")
    assert py_records.zstd_encode is aiokafka.codec.zstd_encode


def test_a_builder_that_gives_its_encoder_arguments_of_its_own_is_refused(monkeypatch):
    """The probe compresses with the encoder bound to the level, as the batches will: a builder that passes a level
    of its own would clash with it at every batch, after start-up."""
    _builder_compressing_with(monkeypatch, lambda data: py_records.zstd_encode(data, None))
    with pytest.raises(CompressionLevelUnsupported) as e:
        set_compression_level("zstd", 7)
    assert str(e.value) == _refusal(py_records.__name__, "calls zstd_encode with arguments of its own (1 more, "
                                    "keywords []), so the level cannot be set", level=7)
    assert py_records.zstd_encode is aiokafka.codec.zstd_encode


def _encoder_of_another_aiokafka(payload, compression_level=None):   # its level named otherwise
    return bytes(cramjam.zstd.compress(payload, level=compression_level or 3))


def test_an_encoder_that_takes_the_level_under_another_name_is_refused(monkeypatch):
    own = _encoder_of_another_aiokafka
    monkeypatch.setattr(aiokafka.codec, "zstd_encode", own)
    for m in MODULES:
        monkeypatch.setattr(m, "zstd_encode", own)
    with pytest.raises(CompressionLevelUnsupported) as e:
        set_compression_level("zstd", 2)
    used = py_records.DefaultRecordBatchBuilder.__module__   # the Cython builder's module unless NO_EXTENSIONS
    assert str(e.value) == _refusal(used, "fails to build a batch with zstd_encode bound to the level (TypeError: "
                                    "_encoder_of_another_aiokafka() got an unexpected keyword argument 'level')")
    assert all(m.zstd_encode is own for m in MODULES)


@pytest.mark.parametrize("value", ["null", "", "None"])
def test_the_environment_sets_the_level_to_null(monkeypatch, value):
    monkeypatch.setenv("STREAM_KAFKA__COMPRESSION_LEVEL", value)
    assert load_settings(None).kafka.compression_level is None


@pytest.mark.parametrize(("kafka", "message"), [
    ({"compression_type": "none", "compression_level": 1},
     "compression_type none compresses nothing: leave compression_level unset (null), not 1"),
    ({"compression_level": 23}, "zstd compresses at levels -131072 to 22 (Kafka's compression.zstd.level), not 23"),
    ({"compression_level": -131073},
     "zstd compresses at levels -131072 to 22 (Kafka's compression.zstd.level), not -131073"),
    ({"compression_type": "gzip", "compression_level": 0},
     "gzip compresses at levels 1 to 9 (Kafka's compression.gzip.level), not 0"),
    ({"compression_type": "gzip", "compression_level": 10},
     "gzip compresses at levels 1 to 9 (Kafka's compression.gzip.level), not 10"),
    ({"compression_type": "lz4", "compression_level": 0},
     "lz4 compresses at levels 1 to 17 (Kafka's compression.lz4.level), not 0"),
    ({"compression_type": "lz4", "compression_level": 18},
     "lz4 compresses at levels 1 to 17 (Kafka's compression.lz4.level), not 18"),
])
def test_a_level_the_codec_does_not_take_is_refused(kafka, message):
    with pytest.raises(ConfigError) as e:
        load_settings(None, kafka=kafka)
    assert str(e.value) == f"invalid configuration in environment: kafka.compression_level: Value error, {message}"


def test_the_level_left_unset_is_2_with_zstd_and_the_codecs_own_with_the_others():
    assert [load_settings(None, kafka=k).kafka.compression_level for k in (
        {}, {"compression_type": "zstd"}, {"compression_type": "gzip"}, {"compression_type": "lz4"},
        {"compression_type": "none"}, {"compression_level": None}, {"compression_level": -7},
        {"compression_type": "gzip", "compression_level": 9}, {"compression_type": "lz4", "compression_level": 17},
        {"compression_level": -131072}, {"compression_level": 22})] == [2, 2, None, None, None, None, -7, 9, 17,
                                                                         -131072, 22]


def _start_worker(tmp_path, monkeypatch, yaml: str):
    """Run `stream worker` up to the point faust would take over, leaving the process's switch interval alone."""
    monkeypatch.setattr("sys.setswitchinterval", lambda s: None)
    return start_worker(tmp_path, monkeypatch, yaml)


def test_the_worker_starts_with_the_configured_level(tmp_path, monkeypatch):
    r = _start_worker(tmp_path, monkeypatch, "projects: [{id: 1}]\nworker: {http_port: null}\n"
                      "kafka: {compression_level: 6}\n")
    assert r.exit_code == 0, r.output
    for m in MODULES:
        assert m.zstd_encode(b"z" * 1000) == bytes(cramjam.zstd.compress(b"z" * 1000, level=6))


def test_the_worker_does_not_start_when_the_level_cannot_be_set(tmp_path, monkeypatch):
    monkeypatch.delattr(py_records, "zstd_encode")
    r = _start_worker(tmp_path, monkeypatch, "projects: [{id: 1}]\nworker: {http_port: null}\n")
    assert r.exit_code == 1
    assert r.output == "Error: " + _refusal(py_records.__name__, "has no zstd_encode to replace with one bound to "
                                            "the level") + "\n"
