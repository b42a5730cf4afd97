"""The committed stubs are exactly what protos/generate.py makes from the .proto files."""

from pathlib import Path

from protos import generate

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_generator(tmp_path):
    (tmp_path / "protos").mkdir()
    assert generate.main(tmp_path) == 0
    made = sorted(p.name for p in (tmp_path / "protos").iterdir())
    assert made == ["occupancy_pb2.py", "occupancy_pb2.pyi", "occupancy_pb2_grpc.py"]
    for name in made:
        assert (ROOT / "protos" / name).read_text() == (tmp_path / "protos" / name).read_text()
