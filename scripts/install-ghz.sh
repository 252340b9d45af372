#!/usr/bin/env bash
# Installs ghz (the gRPC load generator, https://ghz.sh) into .tools/bin; prints its path on the
# last line. See scripts/install-go-tool.sh.
exec "$(dirname "$0")/install-go-tool.sh" ghz
