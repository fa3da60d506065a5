#!/usr/bin/env bash
# make image: build deploy/Dockerfile with podman (daemonless, buildah inside) FROM a Debian
# base made here by mmdebstrap (no image registry is needed or reachable), then run the image
# and check it: /healthz on the admin port answers 200 and the proxy answers an unverified
# client with a 402. Exit status 0 only when all of that worked.
#
#   IMAGE=popgate:0.1.0 BASE=localhost/popgate-base:bookworm deploy/image.sh
#
# Debian packages: podman, buildah, mmdebstrap, runc (`make image` installs them when missing).
set -euo pipefail

IMAGE=${IMAGE:-localhost/popgate:0.1.0}
BASE=${BASE:-localhost/popgate-base:bookworm}
SUITE=${SUITE:-bookworm}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
NAME=popgate-image-check-$$
trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# Runtime options for the check run. runc, not crun: crun refuses hosts whose cgroups are in
# hybrid (v1 + v2) mode. Explicit ulimits: podman as root otherwise raises RLIMIT_NOFILE and
# RLIMIT_NPROC, which a sandboxed host may refuse. Host networking: no network namespace to set up.
RUNTIME=()
command -v runc >/dev/null && RUNTIME=(--runtime "$(command -v runc)")
NOFILE=$(ulimit -Hn)
RUN_OPTS=(--network=host --ulimit "nofile=$NOFILE:$NOFILE" --ulimit nproc=4096:4096)

t0=$(date +%s)
if ! podman image exists "$BASE"; then
  echo "== base $BASE: mmdebstrap $SUITE (python3, python3-venv, passwd, ca-certificates)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    "$SUITE" "$WORK/base.tar"
  podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
fi
t1=$(date +%s)

# chroot isolation: RUN steps need no OCI runtime, cgroups or namespaces of their own. The
# host's CA bundle is lent to RUN steps (read-only, not in the image) so pip can reach PyPI
# through whatever TLS proxy the host trusts.
echo "== build $IMAGE from $BASE"
podman build --quiet --format docker --isolation=chroot --network=host \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg "BASE=$BASE" -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT" >/dev/null
t2=$(date +%s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LISTEN=$(free_port); ADMIN=$(free_port)
mkdir -p "$WORK/etc"
head -c 32 /dev/urandom | base64 > "$WORK/etc/session.key"
chmod 644 "$WORK/etc/session.key"   # read by the image's non-root user (uid 10001)
cat > "$WORK/etc/popgate.toml" <<EOF
[server]
listen = "127.0.0.1:$LISTEN"
admin = "127.0.0.1:$ADMIN"
upstream = "http://127.0.0.1:9"
[store]
url = "sqlite:///var/lib/popgate/store.db"
[sessions]
keys = [{ kid = "k1", secret_file = "/etc/popgate/session.key" }]
EOF

echo "== run $IMAGE (proxy 127.0.0.1:$LISTEN, admin 127.0.0.1:$ADMIN)"
# --health-interval=disable: no systemd timer (none here); the image's HEALTHCHECK is run once below
podman "${RUNTIME[@]}" run -d --name "$NAME" "${RUN_OPTS[@]}" --health-interval=disable \
  -e "POPGATE_ADMIN_PORT=$ADMIN" -v "$WORK/etc:/etc/popgate:ro" "$IMAGE" >/dev/null
python3 - "$LISTEN" "$ADMIN" <<'EOF'
import json, sys, time, urllib.error, urllib.request
listen, admin = sys.argv[1:]
deadline = time.time() + 30
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=2) as r:
            assert r.status == 200, r.status
            break
    except (OSError, urllib.error.URLError):
        if time.time() > deadline:
            sys.exit("no /healthz within 30 s")
        time.sleep(0.3)
print("/healthz: 200")
try:
    urllib.request.urlopen(f"http://127.0.0.1:{listen}/api/things", timeout=5)
    sys.exit("an unverified client got through")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    assert e.code == 402 and e.headers["Content-Type"].startswith("application/problem+json"), e.code
    print(f"GET /api/things: {e.code} {body['reason']}")
EOF
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || { echo "the image runs as root"; exit 1; }
echo "user: $user"
podman "${RUNTIME[@]}" healthcheck run "$NAME" >/dev/null && echo "HEALTHCHECK: healthy"
podman "${RUNTIME[@]}" stop -t 10 "$NAME" >/dev/null
t3=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "== ok: $IMAGE ($((size / 1000000)) MB); base $((t1 - t0)) s, build $((t2 - t1)) s, run check $((t3 - t2)) s"
