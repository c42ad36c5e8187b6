#!/bin/sh
# peer-certs.sh - a fleet CA and node certificates for the peer link's TLS (tests, demos;
# a real fleet keeps its CA key offline and signs each node's certificate the same way).
#   peer-certs.sh DIR CA NAME:IP[,IP...] ...
# DIR/CA.pem (+ CA.key): a self-signed CA; for each NAME: DIR/NAME.pem, DIR/NAME.key, an
# EC P-256 certificate signed by CA naming each IP as a subjectAltName (what the other
# nodes dial). Calling it again with another CA name gives certificates of another fleet.
set -eu
dir=${1:?usage: peer-certs.sh DIR CA NAME:IP[,IP...] ...}
ca=${2:?usage: peer-certs.sh DIR CA NAME:IP[,IP...] ...}
shift 2
mkdir -p "$dir"
if [ ! -e "$dir/$ca.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=memsnap test fleet $ca" -keyout "$dir/$ca.key" -out "$dir/$ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		2>/dev/null
fi
for spec in "$@"; do
	name=${spec%%:*}
	san=$(echo "${spec#*:}" | sed 's/\([^,]*\)/IP:\1/g')
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
		-keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
	printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
		"$san" >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" \
		-CAcreateserial -days 2 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
done
