#!/bin/sh
# energy train|predict|monitor|ingest [options]: the image's entry points (`<command> --help` for options)
set -eu
command="${1:---help}"
case "$command" in
  train|predict|monitor|ingest) shift; exec python -m "workloads.energy.$command" "$@" ;;
  *) echo "usage: energy train|predict|monitor|ingest [options]   (energy <command> --help)" >&2
     [ "$command" = "--help" ] || [ "$command" = "-h" ] || exit 2 ;;
esac
