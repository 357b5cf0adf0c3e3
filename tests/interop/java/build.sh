#!/usr/bin/env bash
# Builds the parquet-java interop peer into target/pme-java-peer.jar (one runnable, shaded jar) with
# Maven; needs Java 17+ and Maven 3 on PATH, and Maven Central (or a filled local repository) for the
# first build. Idempotent: does nothing when the jar is newer than pom.xml and every source file.
# Extra arguments go to mvn (e.g. -Dmaven.repo.local=DIR, -o).
set -euo pipefail
cd "$(dirname "$0")"

JAR=target/pme-java-peer.jar
if [ -f "$JAR" ] && [ -z "$(find pom.xml src -newer "$JAR" -print -quit)" ]; then
  exit 0
fi
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "java peer: '$tool' not found; the parquet-java interop peer needs Java 17+ and Maven 3" >&2
    exit 1
  fi
done
echo "java peer: building $JAR" >&2
start=$SECONDS
# (Debian's Maven 3.8 prints stray ANSI resets even in batch mode; strip them.)
mvn -B -q -Dstyle.color=never -Dmaven.test.skip=true "$@" package 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2
echo "java peer: built $JAR in $((SECONDS - start)) s" >&2
