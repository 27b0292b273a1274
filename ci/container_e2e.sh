#!/usr/bin/env bash
# Container lane: build the real Dockerfile with podman (no Docker daemon, no registry), run
# dpsynth in it with a read-only root filesystem (a signed release, checked with the public
# key), then run the Kubernetes Jobs' pod templates (kubectl kustomize of a copy of k8s/ with
# the test ledger URL in its git-ignored ledger-url file -> ci/job2pod.py -> podman kube play)
# against a throwaway PostgreSQL ledger on loopback, and check the bundle on the output
# volume, the ledger rows, and that the ledger password appears in no log.
# Works on a fresh Debian 12 machine (installs what it uses) and when run again (cached base
# image and build layers). Needs root. See ../shared/notes/container-ci.md for why each knob.
#   env: E2E_KEEP=1 keeps the temp dir and the podman objects for debugging.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export DEBIAN_FRONTEND=noninteractive
IMAGE=localhost/dpsynth:ci
BASE=localhost/dpsynth-base:bookworm
WORK=$(mktemp -d /tmp/dpsynth-ctr-e2e.XXXXXX); chmod 755 "$WORK"
PGBIN=/usr/lib/postgresql/15/bin; PGD="$WORK/pg"
PLAYS=()
T0=$(date +%s); TL=$T0; TIMINGS=""
step() { local now; now=$(date +%s); TIMINGS+="$1=$((now - TL))s "; TL=$now; }
say() { printf '[container-e2e %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { say "FAIL: $*"; exit 1; }

cleanup() {
  local rc=$?
  set +e
  if [ "${E2E_KEEP:-0}" != 1 ]; then
    for p in "${PLAYS[@]}"; do podman kube down "$p" >/dev/null 2>&1; done
    # PVC stand-ins, and the volumes kube play made for the ConfigMaps (kube down keeps them)
    podman volume ls -q | grep -E '^dpsynth-(input|output|schema|release-config|ledger)' \
      | xargs -r podman volume rm -f >/dev/null 2>&1
    # the build stage's intermediate images (~1 GB each time the sources change)
    podman image prune -f --filter label=org.dpsynth.stage=build >/dev/null 2>&1
    podman secret rm dpsynth-ledger >/dev/null 2>&1
  fi
  [ -f "$PGD/postmaster.pid" ] && su postgres -c "$PGBIN/pg_ctl -D $PGD -m fast stop" >/dev/null 2>&1
  if [ "${E2E_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT

# 1. tools: podman with runc (crun fails on this kernel's hybrid cgroups), mmdebstrap, PostgreSQL
say "installing podman, runc, mmdebstrap, postgresql (apt)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends podman buildah runc conmon catatonit \
  containernetworking-plugins fuse-overlayfs uidmap mmdebstrap postgresql >/dev/null
command -v kubectl >/dev/null || die "kubectl is needed for 'kubectl kustomize k8s' (preinstalled on our machines)"
python3 -c 'import yaml' 2>/dev/null || apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null
step tools

# 2. podman settings via CONTAINERS_CONF (nothing in /etc changes): runc, and rlimits within
#    the hard limits (no CAP_SYS_RESOURCE here, podman's defaults can't be set)
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"

# 3. a python:3.11-slim stand-in from the Debian mirror (no registry resolves here); cached
if ! podman image exists "$BASE"; then
  say "building the base image with mmdebstrap"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm - http://deb.debian.org/debian \
  | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null
else
  say "base image $BASE cached"
fi
# the base by digest, as a release build should use it (the Dockerfile's comment says why its
# default is a tag): the digest of the image just built or found, not a tag that can move
BASE_REF="${BASE%%:*}@$(podman image inspect --format '{{.Digest}}' "$BASE")"
say "base image $BASE_REF"
step base

# 4. the real Dockerfile; the machine's CA bundle as the optional build secret (TLS-intercepted
#    egress to PyPI)
say "podman build"
OLD_ID=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build -q --network host --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt \
  --build-arg BASE_IMAGE="$BASE_REF" --build-arg SOURCE="file://$REPO" -t "$IMAGE" . >/dev/null
NEW_ID=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# a rebuilt image leaves the previous one dangling: remove it so repeated runs don't fill the disk
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then podman rmi "$OLD_ID" >/dev/null 2>&1 || true; fi
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "image $IMAGE: $SIZE bytes ($((SIZE / 1000000)) MB)"
[ "$SIZE" -lt 1000000000 ] || die "image is over 1 GB"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || die "image USER is not 10001:10001"
if podman run --rm --network none --entrypoint python3 "$IMAGE" -c 'import torch' >/dev/null 2>&1; then
  die "torch is in the default image"
fi
step build

# 5. the image alone, as locked down as the Job runs it
RUN=(podman run --rm --read-only --tmpfs /tmp --network none --cap-drop ALL
     --security-opt no-new-privileges --memory 2g --cpus 2)
say "$("${RUN[@]}" "$IMAGE" --version)"
[ "$("${RUN[@]}" --entrypoint id "$IMAGE" -u)" = 10001 ] || die "container does not run as uid 10001"

NIST="$REPO/../shared/data/nist_excerpts/ma2019.csv.gz"
if [ -f "$NIST" ]; then
  DATA="$NIST"; SCHEMA=nist_excerpts.yaml; DATASET=nist_excerpts
else  # checkout without ../shared: the bundled example (slower)
  DATA="$REPO/examples/diabetes130/diabetic_data.csv.gz"; SCHEMA=diabetes130.yaml; DATASET=diabetes130
fi
INPUT=$(basename "$DATA")
mkdir -p "$WORK/data" "$WORK/out"; cp "$DATA" "$WORK/data/"; chown 10001:10001 "$WORK/out"
mkdir -p "$WORK/keys"; chown 10001:10001 "$WORK/keys"
say "signed release in the container (--read-only, --network none): $DATASET, mst, epsilon 1"
"${RUN[@]}" -v "$WORK/keys:/keys" "$IMAGE" keygen --out /keys/custodian.pem --json >/dev/null
"${RUN[@]}" -v "$WORK/out:/out" "$IMAGE" ledger init --ledger sqlite:////out/ledger.db \
  --dataset-id "$DATASET" --total-epsilon 2 --json >/dev/null
rc=0
"${RUN[@]}" -v "$WORK/data:/data:ro" -v "$WORK/out:/out" -v "$WORK/keys:/keys:ro" "$IMAGE" release \
  --schema "/opt/dpsynth/schemas/$SCHEMA" --input "/data/$INPUT" --engine mst --epsilon 1 \
  --ledger sqlite:////out/ledger.db --release-id ci-podman-run --out /out/bundle --seed 1 --json \
  --sign-key /keys/custodian.pem > "$WORK/run-release.json" || rc=$?
[ "$rc" = 0 ] || { cat "$WORK/run-release.json"; die "release in the container exited $rc"; }
"${RUN[@]}" -v "$WORK/out:/out:ro" -v "$WORK/keys/custodian.pem.pub:/custodian.pub:ro" "$IMAGE" \
  inspect /out/bundle --verify-key /custodian.pub --json > "$WORK/run-inspect.json" \
  || { cat "$WORK/run-inspect.json"; die "dpsynth inspect --verify-key failed on the bundle"; }
grep -q '"signature": "verified"' "$WORK/run-inspect.json" || die "signature not verified"
say "signed bundle from podman run verified: $(ls "$WORK/out/bundle" | tr '\n' ' ')"
step run

# 6. throwaway PostgreSQL ledger on loopback (a free port; trust auth is fine on 127.0.0.1)
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$PGD"; chown postgres: "$PGD"
su postgres -c "$PGBIN/initdb -D $PGD -U postgres -A trust --no-sync" >/dev/null
su postgres -c "$PGBIN/pg_ctl -D $PGD -l $PGD/log -w -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGD -c fsync=off -c full_page_writes=off -c synchronous_commit=off' start" >/dev/null
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create role dpsynth login password 'ci-only'"
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create database dpsynth owner dpsynth"
LEDGER="postgresql://dpsynth:ci-only@127.0.0.1:$PGPORT/dpsynth"
step postgres

# 7. the Jobs' pod templates from the rendered kustomization, with the Job controller's label
#    (release id = Job name), the test ledger URL in the custodian's git-ignored k8s/ledger-url
#    (in a copy of k8s/: nothing is written into the checkout), and volumes named like the PVCs
mkdir -p "$WORK/k8s"; cp -r k8s/. "$WORK/k8s/"; rm -f "$WORK/k8s/ledger-url"
if kubectl kustomize "$WORK/k8s" >/dev/null 2>&1; then die "kustomize rendered without k8s/ledger-url"; fi
(umask 077; printf '%s\n' "$LEDGER" > "$WORK/k8s/ledger-url")
kubectl kustomize "$WORK/k8s" > "$WORK/rendered.yaml"
JOB=$(python3 -c 'import sys, yaml; print(next(d["metadata"]["name"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Job" and d["metadata"]["name"] != "dpsynth-ledger-init"))' "$WORK/rendered.yaml")
podman volume rm -f dpsynth-input dpsynth-output >/dev/null 2>&1 || true
podman volume create dpsynth-input >/dev/null; podman volume create dpsynth-output >/dev/null
cp "$DATA" "$(podman volume inspect --format '{{.Mountpoint}}' dpsynth-input)/"
chown 10001:10001 "$(podman volume inspect --format '{{.Mountpoint}}' dpsynth-output)"
OVR=(--image "$IMAGE")
if [ "$DATASET" != diabetes130 ]; then  # the small table keeps CI fast; the manifests are unchanged
  OVR+=(--config-file "dpsynth-schema:schema.yaml=schemas/$SCHEMA"
        --config "dpsynth-release-config:DATASET_ID=$DATASET"
        --config "dpsynth-release-config:INPUT_FILE=$INPUT")
fi
OVR+=(--config "dpsynth-release-config:ENGINE=mst")

play() {  # play FILE POD CONTAINER -> prints the container's exit code
  podman kube down "$1" >/dev/null 2>&1 || true
  # podman 4.3 logs a harmless "Removing container ... from database" error for init containers
  podman kube play --network host "$1" >/dev/null 2>>"$WORK/kube-play.err" \
    || { cat "$WORK/kube-play.err" >&2; return 1; }
  podman wait "$2-$3"
}

say "kube play: Job dpsynth-ledger-init"
python3 ci/job2pod.py "$WORK/rendered.yaml" "$WORK/play-init.yaml" --job dpsynth-ledger-init "${OVR[@]}" >/dev/null
PLAYS+=("$WORK/play-init.yaml")
rc=$(play "$WORK/play-init.yaml" dpsynth-ledger-init dpsynth)
podman logs dpsynth-ledger-init-dpsynth > "$WORK/init.log" 2>&1 || true
[ "$rc" = 0 ] || { cat "$WORK/init.log"; die "ledger-init pod exited $rc"; }

say "kube play: Job $JOB (release id $JOB)"
python3 ci/job2pod.py "$WORK/rendered.yaml" "$WORK/play-release.yaml" --job "$JOB" "${OVR[@]}" >/dev/null
PLAYS+=("$WORK/play-release.yaml")
rc=$(play "$WORK/play-release.yaml" "$JOB" dpsynth)
podman logs "$JOB-dpsynth" > "$WORK/release.log" 2>&1 || true
[ "$rc" = 0 ] || { podman logs "$JOB-ledger-init" 2>&1 | tail -5; cat "$WORK/release.log"; die "release pod exited $rc"; }
# the pod really ran the way the manifest asks (what kube play applied from the securityContext)
got=$(podman inspect "$JOB-dpsynth" --format '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.HostConfig.Memory}} {{len .HostConfig.CapDrop}}')
say "release container: read-only rootfs, user, memory limit, dropped caps = $got"
case "$got" in "true 10001"*" 4294967296 "*) ;; *) die "unexpected container settings: $got";; esac
[ "${got##* }" -gt 0 ] || die "no capabilities dropped"
step kube_play

# 8. the bundle on the output volume, and the ledger row
CHECK=(podman run --rm --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)
"${CHECK[@]}" --network none -v dpsynth-output:/output:ro "$IMAGE" inspect "/output/$JOB" --json \
  > "$WORK/inspect.json" || { cat "$WORK/inspect.json"; die "dpsynth inspect failed on the Job's bundle"; }
# the ledger URL as a file (DPSYNTH_LEDGER_FILE), as the pods get it
(umask 022; printf '%s\n' "$LEDGER" > "$WORK/ledger-url")
LEDGER_FILE=(-v "$WORK/ledger-url:/run/dpsynth/ledger-url:ro" -e DPSYNTH_LEDGER_FILE=/run/dpsynth/ledger-url)
"${CHECK[@]}" --network host "${LEDGER_FILE[@]}" "$IMAGE" ledger show --json > "$WORK/ledger.json"
python3 - "$WORK/inspect.json" "$WORK/ledger.json" "$JOB" "$DATASET" <<'PY'
import json, sys
inspect, ledger = (json.load(open(p)) for p in sys.argv[1:3])
job, dataset = sys.argv[3:5]
assert inspect["ok"] and not inspect["problems"], inspect
ds = {d["dataset_id"]: d for d in ledger["datasets"]}[dataset]
charges = {c["release_id"]: c for c in ds["charges"]}
assert charges[job]["status"] == "released", charges
assert len(charges) == 1, charges
print(f"ledger: {dataset} total epsilon {ds['total_epsilon']}, charge {job} "
      f"{charges[job]['status']} (epsilon {charges[job]['epsilon']})")
PY

# 9. running the same Job again (what a retry would do) must be refused without a new charge
say "kube play again with the same release id: must be refused, nothing spent"
# (move the bundle aside first, else the non-empty --out dir is refused before the ledger is asked)
OUTMP=$(podman volume inspect --format '{{.Mountpoint}}' dpsynth-output)
mv "$OUTMP/$JOB" "$OUTMP/$JOB.first"
rc=$(play "$WORK/play-release.yaml" "$JOB" dpsynth)
[ "$rc" != 0 ] || die "a second run with release id $JOB was not refused"
"${CHECK[@]}" --network host "${LEDGER_FILE[@]}" "$IMAGE" ledger show --json > "$WORK/ledger2.json"
python3 - "$WORK/ledger.json" "$WORK/ledger2.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["datasets"] == b["datasets"], "the refused re-run changed the ledger"
PY
podman logs "$JOB-dpsynth" > "$WORK/rerun.log" 2>&1 || true
grep -q "already has a charge" "$WORK/rerun.log" \
  || { tail -3 "$WORK/rerun.log"; die "the re-run failed for another reason than the ledger"; }
[ ! -e "$OUTMP/$JOB" ] || die "the refused re-run wrote a bundle"
say "re-run refused by the ledger (exit $rc); ledger unchanged"
# the ledger's password never reaches a log or an output
for f in "$WORK"/*.log "$WORK"/*.json; do
  if grep -q "ci-only" "$f"; then die "the ledger password appears in $(basename "$f")"; fi
done
# both *_FILE and the plain variable set: refused (exit 2), without echoing either
rc=0; "${CHECK[@]}" --network none "${LEDGER_FILE[@]}" -e DPSYNTH_LEDGER="$LEDGER" "$IMAGE" \
  ledger show > "$WORK/both.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "both set" "$WORK/both.out" && ! grep -q "ci-only" "$WORK/both.out" \
  || { cat "$WORK/both.out"; die "DPSYNTH_LEDGER with DPSYNTH_LEDGER_FILE was not refused cleanly"; }
step checks

say "OK image_size=${SIZE}B ($((SIZE / 1000000)) MB) timings: ${TIMINGS}total=$(( $(date +%s) - T0 ))s"
