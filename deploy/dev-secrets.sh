#!/usr/bin/env bash
# Writes random secrets for deploy/compose.yaml into deploy/secrets/ (git-ignored), once:
# a file that exists is kept. Prints where the client's token is, never the token itself.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
umask 077
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
write() { [ -s "$dir/$1" ] || printf '%s' "$2" > "$dir/$1"; }
write tokens "read,write $(random)"$'\n'
write postgres_password "$(random)"
write s3_access_key_id "sparsecl-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
write s3_secret_access_key "$(random)"
# the containers run as other users than yours: they must be able to read the files
chmod 0644 "$dir"/tokens "$dir"/postgres_password "$dir"/s3_access_key_id "$dir"/s3_secret_access_key
echo "secrets in $dir; a client's token: SPARSECL_TOKEN=\$(cut -d' ' -f2 $dir/tokens)"
