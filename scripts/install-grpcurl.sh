#!/usr/bin/env bash
# Installs grpcurl (curl for gRPC servers with reflection) into .tools/bin; prints its path on the
# last line. See scripts/install-go-tool.sh.
exec "$(dirname "$0")/install-go-tool.sh" grpcurl
