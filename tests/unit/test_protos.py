"""The committed stubs are exactly what protos/generate.py makes from the .proto files, and each
message of `occupancy.v1.IngestService` is wire-compatible with the one the deprecated
`occupancy.v1.Ingest` takes or returns in its place."""

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from protos import generate
from protos.occupancy.v1 import occupancy_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
NEW, OLD = (pb.DESCRIPTOR.services_by_name[name] for name in ("IngestService", "Ingest"))


def test_committed_stubs_match_the_generator(tmp_path):
    assert generate.main(tmp_path) == 0
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert made == [
        "protos/occupancy/v1/occupancy_pb2.py",
        "protos/occupancy/v1/occupancy_pb2.pyi",
        "protos/occupancy/v1/occupancy_pb2_grpc.py",
    ]
    for name in made:
        assert (ROOT / name).read_text() == (tmp_path / name).read_text(), name


def _wire(message) -> dict[int, tuple]:
    """What a message is on the wire: its fields' numbers, with their types and labels (and
    the message type's own wire form, for a field holding messages)."""
    out = {}
    for f in message.fields:
        inner = _wire(f.message_type) if f.type == FieldDescriptor.TYPE_MESSAGE else None
        out[f.number] = (f.type, f.is_repeated, inner)
    return out


# RPCs added to IngestService after its former name was deprecated: never served under it
ADDED = {"SendPingColumns"}


def test_the_deprecated_service_has_the_same_methods_and_is_marked_so():
    assert [m.name for m in OLD.methods] == [m.name for m in NEW.methods if m.name not in ADDED]
    assert OLD.GetOptions().deprecated and not NEW.GetOptions().deprecated
    assert all(m.GetOptions().deprecated for m in OLD.methods)
    for old in OLD.methods:
        new = NEW.methods_by_name[old.name]
        assert (old.client_streaming, old.server_streaming) == (
            new.client_streaming,
            new.server_streaming,
        )


def _reserved(message) -> set[int]:
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    return {n for r in proto.reserved_range for n in range(r.start, r.end)}


@pytest.mark.parametrize("method", [m.name for m in NEW.methods if m.name not in ADDED])
def test_each_new_message_reads_the_old_one_and_back(method):
    old, new = OLD.methods_by_name[method], NEW.methods_by_name[method]
    assert _wire(new.input_type) == _wire(old.input_type)
    new_out, old_out = _wire(new.output_type), _wire(old.output_type)
    # a door-event response has no `late` (never set for door events): its number is reserved
    missing = old_out.keys() - new_out.keys()
    assert missing <= _reserved(new.output_type)
    assert {n: w for n, w in old_out.items() if n not in missing} == new_out


def test_a_message_of_the_old_contract_is_the_same_bytes_in_the_new_one():
    ping = pb.Ping(device_id="d-1", ts_ms=5, lat=1.5, lng=-2.5, region="r", accuracy_m=3.0)
    ping.attributes["fleet"] = "bus"
    batch = pb.PingBatch(pings=[ping]).SerializeToString()
    assert pb.SendPingsRequest.FromString(batch) == pb.SendPingsRequest(pings=[ping])
    assert pb.StreamPingsRequest.FromString(ping.SerializeToString()).attributes == {"fleet": "bus"}
    ack = pb.SendPingsResponse(accepted=3, late=1, rejected=1)
    ack.rejections.add(index=4, reason="lat_out_of_range")
    old = pb.IngestAck.FromString(ack.SerializeToString())
    assert (old.accepted, old.late, old.rejected, old.rejections[0].reason) == (
        3,
        1,
        1,
        "lat_out_of_range",
    )
    doors = pb.SendDoorEventsResponse(accepted=2, rejected=1).SerializeToString()
    assert pb.IngestAck.FromString(doors) == pb.IngestAck(accepted=2, rejected=1)
