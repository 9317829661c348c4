#!/bin/sh
# mkcerts.sh DIR: makes a throwaway test PKI in DIR with openssl, at test time (nothing secret
# is kept in the repository). Everything is P-256 ECDSA (fast to make and to handshake).
#   ca.pem ca.key            the test CA
#   server.pem server.key    leaf for localhost, 127.0.0.1 and ::1, signed by the CA
#   server-chain.pem         server.pem then an intermediate: the leaf of chain.key
#   chain.key                key of server-chain.pem's leaf (signed by the intermediate)
#   other.pem other.key      leaf for other.test and *.other.test (SNI selection, name mismatch)
#   expired.pem expired.key  leaf for localhost whose validity ended in 2020
#   client.pem client.key    client certificate (clientAuth), signed by the CA
#   rogue-ca.pem             another CA; rogue.pem rogue.key: a localhost leaf it signed
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

# ca NAME SUBJECT: a self-signed CA.
ca() {
    key "$1.key"
    ossl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -out "$1.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# leaf NAME CA SUBJECT EXTFILE-LINES...: a certificate for NAME.key signed by CA.
leaf() {
    name=$1 issuer=$2 subj=$3
    shift 3
    [ -f "$name.key" ] || key "$name.key"
    ossl req -new -key "$name.key" -subj "/CN=$subj" -out "$name.csr"
    printf '%s\n' "$@" > "$name.ext"
    ossl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
        -days 825 -extfile "$name.ext" -out "$name.pem"
    rm -f "$name.csr" "$name.ext"
}

ca ca "Tycho Test CA"
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    "extendedKeyUsage=serverAuth"
leaf other ca other.test "subjectAltName=DNS:other.test,DNS:*.other.test" \
    "extendedKeyUsage=serverAuth"
leaf client ca "Tycho Test Client" "extendedKeyUsage=clientAuth"
leaf inter ca "Tycho Test Intermediate" "basicConstraints=critical,CA:TRUE" \
    "keyUsage=critical,keyCertSign,cRLSign"
leaf chain inter localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth"
cat chain.pem inter.pem > server-chain.pem

# expired: `openssl ca` is the one command of OpenSSL 3.0 that takes dates in the past.
key expired.key
ossl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
mkdir -p ca.db
: > ca.db/index
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > expired.ext
cat > ca.db/conf <<CONF
[ca]
default_ca = test
[test]
database = ca.db/index
new_certs_dir = ca.db
serial = ca.db/serial
default_md = sha256
policy = any
[any]
commonName = supplied
CONF
echo 1000 > ca.db/serial
ossl ca -batch -config ca.db/conf -cert ca.pem -keyfile ca.key -in expired.csr \
    -startdate 20200101000000Z -enddate 20200201000000Z -extfile expired.ext -notext \
    -out expired.pem
rm -rf ca.db expired.csr expired.ext

ca rogue-ca "Rogue Test CA"
leaf rogue rogue-ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1"
rm -f ./*.srl
chmod 600 ./*.key
