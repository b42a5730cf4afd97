"""Generate the Python stubs of protos/*.proto; the *_pb2*.py files are never edited by hand.

    .venv/bin/python protos/generate.py

Paths are taken from the repository root, so the stubs import each other as `protos.*` and
their message classes belong to the `protos.occupancy_pb2` module (which pickling relies on).
"""

import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(out: Path = ROOT) -> int:
    for proto in sorted(HERE.glob("*.proto")):
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto.relative_to(ROOT)),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto.name}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
