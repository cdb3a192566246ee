#!/usr/bin/env bash
# mkca.sh OUTDIR: a test CA, a server certificate for localhost/127.0.0.1 signed by it, an
# untrusted self-signed one, and one for the wrong name (for certificate-failure tests).
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
[ -s server.pem ] && [ -s wrongname.pem ] && [ -s untrusted.pem ] && exit 0
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=relayq test CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() { # name san signer
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$2" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
leaf server "DNS:localhost,IP:127.0.0.1"
leaf wrongname "DNS:wrong.example"
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=localhost" \
  -keyout untrusted.key -out untrusted.pem -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
echo "test CA in $out"
