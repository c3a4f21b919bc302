#!/bin/sh
# Point apt at one archive: the pinned suite's main component, from the configured mirror (offline
# path) or from a dated snapshot of the archive (online path), so a build from the pins still finds
# every pinned version after Debian's next point release. A snapshot's Release files are past their
# Valid-Until, so that check is off (apt still verifies the archive's signatures).
# usage: apt-sources.sh <archive url> <suite>
set -eu
url=$1; suite=$2
rm -f /etc/apt/sources.list.d/debian.sources /etc/apt/apt.conf.d/docker-clean
echo "deb $url $suite main" > /etc/apt/sources.list
printf 'Acquire::Check-Valid-Until "false";\n' > /etc/apt/apt.conf.d/80check-valid-until
echo "apt sources: $url $suite"
