#!/usr/bin/env bash
# Generates Python protobuf/gRPC code from proto/*.proto (never edit the output by hand).
# Skipped when the .proto files are unchanged since the last generation.
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=$(cat proto/*.proto | sha256sum | cut -c1-12)
if [ "$(cat proto/.stamp 2>/dev/null)" = "$STAMP" ] && ls proto/*_pb2.py >/dev/null 2>&1; then
  printf '\033[1m[install]\033[0m %s\n' "protobuf code up to date"
  exit 0
fi
printf '\033[1m[install]\033[0m %s\n' "generating protobuf/gRPC code from proto/*.proto"
rm -f proto/*_pb2.py proto/*_pb2.pyi proto/*_pb2_grpc.py
.venv/bin/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. proto/*.proto
echo "$STAMP" > proto/.stamp
