#!/usr/bin/env bash
# Installs libtokenflow (header, library, pkg-config file) into the project-local prefix .build/prefix.
# Host builds and tests find it there: PKG_CONFIG_PATH=.build/prefix/lib/pkgconfig, and at run time
# LD_LIBRARY_PATH=.build/prefix/lib (or an rpath to it).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
require_packages valgrind qemu-user # Tests/Host/c-api.sh: leaks (valgrind), older CPUs (qemu-x86_64 -cpu)
# Already built by setup.sh's `swift build`; this keeps the step runnable on its own (a no-op otherwise).
swift build -c release --product tokenflow
scripts/install.sh --prefix .build/prefix
