#!/bin/sh
# Writes throwaway test certificates into DIR (EC P-256, valid 2 days), made
# fresh by each test run so nothing secret or expiring is checked in:
#   ca.pem/.key          the test CA
#   server.pem/.key      CN and only SAN "pyexec.test" (no IP SAN, so a client
#                        dialing 127.0.0.1 needs a server name override)
#   client.pem/.key      CN "client-1", clientAuth, signed by the test CA
#   rogue_ca.pem/.key    an unrelated CA
#   rogue.pem/.key       CN "rogue", signed by the unrelated CA
# Usage: make_test_certs.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=pyexec-test-ca 2>/dev/null
openssl req -x509 $ec -keyout rogue_ca.key -out rogue_ca.pem -days 2 -subj /CN=rogue-ca 2>/dev/null
leaf() {  # NAME CN EXT CA
  printf '%s\n' "$3" > "$1.ext"
  openssl req $ec -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial \
    -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
}
leaf server pyexec.test "subjectAltName=DNS:pyexec.test" ca
leaf client client-1 "extendedKeyUsage=clientAuth" ca
leaf rogue rogue "extendedKeyUsage=clientAuth" rogue_ca
