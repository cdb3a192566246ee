#!/usr/bin/env bash
# mkca.sh OUTDIR — test certificates for the relay harness (openssl CLI, EC P-256, SHA-256,
# X.509 v3, valid 10 years):
#   ca.pem ca.key               test CA (basicConstraints critical CA:TRUE; keyCertSign, cRLSign)
#   server.pem server.key       localhost / 127.0.0.1, signed by the CA
#   wrongname.pem wrongname.key wrong.example, signed by the CA      (host-name mismatch)
#   untrusted.pem untrusted.key localhost / 127.0.0.1, self-signed   (unknown issuer)
#   expired.pem expired.key     localhost / 127.0.0.1, signed by the CA, valid only in
#                               January 2020 (expired)
# Leaf certificates: basicConstraints CA:FALSE, keyUsage digitalSignature+keyEncipherment,
# extendedKeyUsage serverAuth, subjectAltName — what rustls/webpki expects.
# Idempotent: does nothing if all ten files exist. Safe to run concurrently (flock).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
files=(ca.pem ca.key server.pem server.key untrusted.pem untrusted.key wrongname.pem wrongname.key
  expired.pem expired.key)
mkdir -p "$out"
exec 9>"$out/.mkca.lock"
flock -w 60 9 || { echo "mkca: $out is locked" >&2; exit 1; }

have_all() { for f in "${files[@]}"; do [ -s "$out/$f" ] || return 1; done; }
if have_all; then
  echo "test CA already in $out"
  exit 0
fi

# Build everything in a scratch directory, then move it in: never a CA from one run with a
# server certificate from another.
tmp=$(mktemp -d "$out/.mkca.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
ossl() { openssl "$@" 2>err.txt || { cat err.txt >&2; exit 1; }; }

# A self-contained config, so /etc/ssl/openssl.cnf defaults add nothing unexpected.
cat > ossl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
# `openssl ca`, only for the expired leaf: the one way to set past dates in OpenSSL 3.0.
[ca]
default_ca = testca
[testca]
database = cadb/index.txt
serial = cadb/serial
new_certs_dir = cadb
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
EOF
leaf_ext() { # SAN -> extension file for a server certificate
  printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = digitalSignature, keyEncipherment' \
    'extendedKeyUsage = serverAuth' 'subjectKeyIdentifier = hash' "subjectAltName = $1"
}
newkey() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

# The CA.
newkey ca.key
ossl req -config ossl.cnf -new -x509 -sha256 -days 3650 -key ca.key -subj "/CN=relayq test CA" \
  -extensions ca_ext -out ca.pem

# Leaves signed by the CA.
leaf() { # name CN SAN
  newkey "$1.key"
  ossl req -config ossl.cnf -new -sha256 -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  leaf_ext "$3" > "$1.ext"
  printf 'authorityKeyIdentifier = keyid\n' >> "$1.ext"
  ossl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 12)" \
    -extfile "$1.ext" -out "$1.pem"
}
leaf server localhost "DNS:localhost,IP:127.0.0.1"
leaf wrongname wrong.example "DNS:wrong.example"

# A leaf for localhost, signed by the CA, that expired long ago.
newkey expired.key
ossl req -config ossl.cnf -new -sha256 -key expired.key -subj "/CN=localhost" -out expired.csr
leaf_ext "DNS:localhost,IP:127.0.0.1" > expired.ext
printf 'authorityKeyIdentifier = keyid\n' >> expired.ext
mkdir cadb && : > cadb/index.txt && openssl rand -hex 12 > cadb/serial
ossl ca -batch -config ossl.cnf -notext -startdate 20200101000000Z -enddate 20200131000000Z \
  -extfile expired.ext -in expired.csr -out expired.pem

# A self-signed leaf for localhost that no CA vouches for.
newkey untrusted.key
ossl req -config ossl.cnf -new -sha256 -key untrusted.key -subj "/CN=localhost" -out untrusted.csr
leaf_ext "DNS:localhost,IP:127.0.0.1" > untrusted.ext
ossl x509 -req -sha256 -days 3650 -in untrusted.csr -signkey untrusted.key -set_serial "0x$(openssl rand -hex 12)" \
  -extfile untrusted.ext -out untrusted.pem

# Sanity: the chain verifies for the intended names, and the others do not.
openssl verify -CAfile ca.pem -purpose sslserver -verify_hostname localhost server.pem >/dev/null
openssl verify -CAfile ca.pem -purpose sslserver -verify_ip 127.0.0.1 server.pem >/dev/null
! openssl verify -CAfile ca.pem -verify_hostname localhost wrongname.pem >/dev/null 2>&1
! openssl verify -CAfile ca.pem untrusted.pem >/dev/null 2>&1
! openssl verify -CAfile ca.pem expired.pem >/dev/null 2>&1

chmod 600 ./*.key
chmod 644 ./*.pem
for f in "${files[@]}"; do mv -f "$f" "$out/$f"; done
echo "test CA in $out"
