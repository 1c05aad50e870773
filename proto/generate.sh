#!/bin/sh
# Regenerate the Python gRPC stubs in styletrain/v1/ from proto/styletrain/v1/styletrain.proto.
# Needs grpcio-tools (pip install -e '.[dev]'); tests/serving/test_proto.py checks the result is current.
set -eu
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
    proto/styletrain/v1/styletrain.proto
