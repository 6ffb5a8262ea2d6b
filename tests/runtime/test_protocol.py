"""The wire format: arrays without pickle, envelopes, and field validation."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from planner_runtime import protocol as P


def _obs_msg(**over):
    msg = P.Observation(3, 12.5, np.arange(4, dtype=np.float32), np.ones(3, np.float32)).to_msg()
    msg.update(over)
    return msg


def test_array_round_trip_keeps_dtype_shape_values():
    for a in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1.5, -2.0]),
              np.arange(5, dtype=np.int64), np.zeros((0, 3), np.float32)):
        b = P.unpack_array(P.pack_array(a), "a", dtypes=tuple(P.ALLOWED_DTYPES))
        assert b.dtype == a.dtype.newbyteorder("<") and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_big_endian_arrays_are_sent_little_endian():
    a = np.arange(3, dtype=">f4")
    packed = P.pack_array(a)
    assert packed["dtype"] == "<f4"
    np.testing.assert_array_equal(P.unpack_array(packed, "a"), a)


@pytest.mark.parametrize("dtype", ["|O", "|V8", "<c8", "<c16", ">f4", "<U3"])
def test_refused_dtypes(dtype):
    with pytest.raises(P.ProtocolError, match="not allowed") as ei:
        P.unpack_array({"dtype": dtype, "shape": [1], "bytes": b"\0" * 8}, "state")
    assert ei.value.code == P.E_BAD_DTYPE


def test_cannot_pack_object_or_complex_arrays():
    for a in (np.array([object()], dtype=object), np.array([1 + 2j])):
        with pytest.raises(P.ProtocolError) as ei:
            P.pack_array(a)
        assert ei.value.code == P.E_BAD_DTYPE


def test_shape_and_byte_count_are_checked():
    good = P.pack_array(np.zeros(4, np.float32))
    with pytest.raises(P.ProtocolError, match="expected shape") as ei:
        P.unpack_array(good, "state", shape=(5,))
    assert ei.value.code == P.E_BAD_SHAPE
    with pytest.raises(P.ProtocolError, match="needs 16 bytes") as ei:
        P.unpack_array({**good, "bytes": b"\0" * 12}, "state")
    assert ei.value.code == P.E_BAD_SHAPE
    with pytest.raises(P.ProtocolError, match="non-negative") as ei:
        P.unpack_array({**good, "shape": [-4]}, "state")
    assert ei.value.code == P.E_BAD_SHAPE


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad):
    a = np.zeros(4, np.float32)
    a[2] = bad
    with pytest.raises(P.ProtocolError, match="non-finite") as ei:
        P.unpack_array(P.pack_array(a), "state")
    assert ei.value.code == P.E_NOT_FINITE


def test_envelope_errors():
    cases = [
        (b"\xc1\xc1garbage", P.E_BAD_FRAME),
        (msgpack.packb([1, 2, 3]), P.E_BAD_FRAME),
        (msgpack.packb({"type": "hello"}), P.E_BAD_VERSION),
        (msgpack.packb({"v": 99, "type": "hello"}), P.E_BAD_VERSION),
        (msgpack.packb({"v": P.PROTOCOL_VERSION}), P.E_MISSING_FIELD),
        (msgpack.packb({"v": P.PROTOCOL_VERSION, "type": "teleport"}), P.E_UNKNOWN_TYPE),
        (msgpack.packb({"v": 1, "type": "hello", "x": msgpack.ExtType(5, b"x")}), P.E_BAD_FRAME),
        (b"\x00" * (P.MAX_MESSAGE_BYTES + 1), P.E_TOO_LARGE),
    ]
    for data, code in cases:
        with pytest.raises(P.ProtocolError) as ei:
            P.decode(data)
        assert ei.value.code == code, (data[:20], ei.value)


def test_observation_validation_names_the_field():
    ok = P.decode(P.encode(_obs_msg()))
    obs = P.Observation.from_msg(ok, 4, 3)
    assert obs.seq == 3 and obs.stamp == 12.5 and obs.state.dtype == np.float32
    bad = {
        "missing state": ({k: v for k, v in _obs_msg().items() if k != "state"}, P.E_MISSING_FIELD, "state"),
        "missing seq": ({k: v for k, v in _obs_msg().items() if k != "seq"}, P.E_MISSING_FIELD, "seq"),
        "seq as text": (_obs_msg(seq="3"), P.E_BAD_FIELD, "seq"),
        "seq as bool": (_obs_msg(seq=True), P.E_BAD_FIELD, "seq"),
        "negative seq": (_obs_msg(seq=-1), P.E_BAD_FIELD, "seq"),
        "nan stamp": (_obs_msg(stamp=math.nan), P.E_NOT_FINITE, "stamp"),
        "int state": (_obs_msg(state=P.pack_array(np.arange(4))), P.E_BAD_DTYPE, "state"),
        "short cond": (_obs_msg(cond=P.pack_array(np.ones(2, np.float32))), P.E_BAD_SHAPE, "cond"),
        "state not a map": (_obs_msg(state=[1.0, 2.0]), P.E_BAD_FIELD, "state"),
    }
    for name, (msg, code, field) in bad.items():
        with pytest.raises(P.ProtocolError, match=field) as ei:
            P.Observation.from_msg(P.decode(P.encode(msg)), 4, 3)
        assert ei.value.code == code, name


def test_chunk_round_trip_and_timing_helpers():
    ch = P.ActionChunk(plan_id=7, obs_seq=3, t0=10.0, dt=0.02,
                       actions=np.arange(8, dtype=np.float32).reshape(4, 2),
                       states=np.zeros((4, 3), np.float32), chunk=2, valid_until=10.08,
                       cold=True, timings={"infer_ms": 1.5})
    back = P.ActionChunk.from_msg(P.decode(P.encode(ch.to_msg())))
    assert (back.plan_id, back.obs_seq, back.chunk, back.cold) == (7, 3, 2, True)
    np.testing.assert_array_equal(back.actions, ch.actions)
    assert back.timings == {"infer_ms": 1.5}
    assert back.index_at(9.99) is None  # before the observation
    assert back.index_at(10.0) == 0 and back.index_at(10.039) == 1 and back.index_at(10.061) == 3
    np.testing.assert_array_equal(back.action_at(10.045), [4.0, 5.0])
    assert back.expired(10.08) and not back.expired(10.079)
    assert back.action_at(10.09) is None
    assert back.age(10.5) == pytest.approx(0.5)
