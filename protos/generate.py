"""Generate the Python stubs of protos/*.proto; the *_pb2*.py files are never edited by hand.

    .venv/bin/python protos/generate.py
"""

import re
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent


def main() -> int:
    for proto in sorted(HERE.glob("*.proto")):
        args = [
            "protoc",
            f"-I{HERE}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto.name}", file=sys.stderr)
            return 1
        # grpc_tools emits `import x_pb2`; the stubs live in the `protos` package
        grpc_file = HERE / f"{proto.stem}_pb2_grpc.py"
        text = grpc_file.read_text()
        text = re.sub(rf"^import {proto.stem}_pb2 as", f"from protos import {proto.stem}_pb2 as",
                      text, flags=re.M)
        grpc_file.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
