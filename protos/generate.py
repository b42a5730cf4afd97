"""Generate the Python stubs of every .proto under protos/; the *_pb2*.py files are never edited
by hand.

    .venv/bin/python protos/generate.py

Each .proto sits where buf wants it, in the directory of its protobuf package under protos/ (the
buf module's root: occupancy.v1 in protos/occupancy/v1/). Paths are taken from the repository
root, so the stubs of occupancy/v1/occupancy.proto are the module `protos.occupancy.v1.
occupancy_pb2` (and `..._pb2_grpc`), whose message classes pickling finds by that name. (Taken
from protos/ instead, they would be `occupancy.v1.occupancy_pb2`, which the CLI package
`occupancy` shadows.) The one cost: protobuf's descriptor pool knows the file as
`protos/occupancy/v1/occupancy.proto`, not as buf's `occupancy/v1/occupancy.proto`; a .proto
importing another would have to name it from the repository root too.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def protos() -> list[Path]:
    """Every .proto of the contract, relative to the repository root."""
    return sorted(p.relative_to(ROOT) for p in HERE.rglob("*.proto"))


def main(out: Path = ROOT) -> int:
    for proto in protos():
        (out / proto.parent).mkdir(parents=True, exist_ok=True)
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
