#!/bin/sh
# Regenerate the Python gRPC stubs in styletrain/v1/ from proto/styletrain/v1/styletrain.proto.
# Needs grpcio-tools (pip install -e '.[dev]'); tests/serving/test_proto.py checks the result is current.
# proto/google/rpc/status.proto is a copy of googleapis' file for buf and non-Python clients; the
# Python stubs import it from googleapis-common-protos, so no stub is generated for it.
set -eu
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
    proto/styletrain/v1/styletrain.proto
