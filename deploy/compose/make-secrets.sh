#!/bin/sh
# Random secrets for cluster.yml, in deploy/compose/secrets/ (never committed: .gitignore).
# The directory is private (0700); the files are 0644 so the containers' own users
# (registry-cache runs as uid 10001, postgres as 999) can read the bind-mounted copies.
# Existing files are kept, so running it again changes nothing.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
random() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
write() {  # write NAME CONTENT: only if missing
  if [ ! -e "$dir/$1" ]; then
    (umask 022 && printf '%s\n' "$2" > "$dir/$1")
    echo "wrote $dir/$1"
  fi
}
write postgres-password "$(random 24)"
write cluster-secret "$(random 32)"
write upstreams.env "# Upstream accounts (optional; blank = anonymous). Docker Hub: an access token.
DOCKERHUB_USERNAME=
DOCKERHUB_PASSWORD=
GHCR_USERNAME=
GHCR_PASSWORD=
QUAY_USERNAME=
QUAY_PASSWORD="
if [ ! -e "$dir/s3.env" ]; then
  key_id="RC$(random 9)"
  secret="$(random 20)"
  write s3.env "AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret"
  write seaweedfs-s3.json "{\"identities\": [{\"name\": \"registry-cache\", \"credentials\": [{\"accessKey\": \"$key_id\", \"secretKey\": \"$secret\"}], \"actions\": [\"Admin\", \"Read\", \"Write\", \"List\", \"Tagging\"]}]}"
fi
