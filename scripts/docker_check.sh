#!/usr/bin/env bash
# Builds both Docker images and uses them as a user does (README.md, "Docker images"):
#   bash scripts/docker_check.sh        (~25 min the first time on 2 cores, ~15 min after)
# 1. an engine: $ENGINE (docker | podman), else whichever works; podman, runc and debootstrap are
#    installed with apt-get when there is none (as root only).
# 2. a base: $BASE, else python:3.11-slim if present or pullable, else a Debian bookworm image
#    made once with debootstrap (localhost/debbase:bookworm: python3 3.11, venv, CA certificates).
# 3. both images; this machine's pip settings (local wheel folders, file:// indexes, constraints)
#    reach the podman build as read-only build-time volumes, never as layers or history.
# 4. in the compile image, as an unprivileged user owning the mounted data folder, with the image
#    read-only: doctor, prepare-smollm2, a 3-die compile, run ("Paris"), verify, then `tyllm serve`
#    on 127.0.0.1 answered through the OpenAI client here; in the quant image: AWQ and
#    checkpoint_convert.py. Then who owns the files, image sizes, labels, history.
# Settings: DOCKER_CHECK_DIR (the script's own folder: logs, pip settings, containers.conf and
# data/, made afresh each run; default /var/tmp/tyllm-docker-check), PORT (8765), CHECK_USER
# (UID:GID the containers run as; default yours, or 1234:1234 when you are root).
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=${DOCKER_CHECK_DIR:-/var/tmp/tyllm-docker-check}
DATA=$WORK/data
LOGS=$WORK/logs
PORT=${PORT:-8765}
DEBBASE=localhost/debbase:bookworm
PYBASE=docker.io/library/python:3.11-slim
mkdir -p "$LOGS"
rm -f "$WORK/sizes.txt" "$WORK/summary.txt"
RESULTS=()
FAILED=0

say() { echo "[docker_check $(date +%H:%M:%S)] $*"; }
die() { echo "error: $*" >&2; exit 2; }

# step NAME COMMAND...: runs it with its output in $LOGS/NAME.log, records PASS/FAIL and the time.
step() {
  local name=$1 t0=$SECONDS; shift
  say "$name ..."
  if "$@" > "$LOGS/$name.log" 2>&1; then
    RESULTS+=("PASS  $name  $((SECONDS - t0)) s")
  else
    RESULTS+=("FAIL  $name  $((SECONDS - t0)) s  (log: $LOGS/$name.log)")
    FAILED=1
    tail -n 15 "$LOGS/$name.log" | sed 's/^/    /'
  fi
}

summary() {
  echo
  echo "== docker_check summary (engine: ${ENGINE:-none}, base: ${BASE:-none}) =="
  printf '%s\n' "${RESULTS[@]}" | tee "$WORK/summary.txt"
  [ -f "$WORK/sizes.txt" ] && tee -a "$WORK/summary.txt" < "$WORK/sizes.txt"
}
trap summary EXIT

# -- 1. the engine ---------------------------------------------------------------------------
engine_works() { command -v "$1" > /dev/null && "$1" info > /dev/null 2>&1; }

install_podman() {
  [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null ||
    die "no working docker or podman; install podman (or start docker) and rerun."
  say "installing podman, runc and debootstrap with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    podman runc debootstrap; } > "$LOGS/apt-get.log" 2>&1 || die "apt-get failed: $LOGS/apt-get.log"
}

choose_engine() {
  if [ -n "${ENGINE:-}" ]; then
    case "$ENGINE" in docker|podman) ;; *) die "ENGINE=$ENGINE: use docker or podman." ;; esac
    [ "$ENGINE" = podman ] && ! command -v podman > /dev/null && install_podman
    engine_works "$ENGINE" || die "ENGINE=$ENGINE does not work here ($ENGINE info fails)."
  elif engine_works docker; then ENGINE=docker
  elif engine_works podman; then ENGINE=podman
  else install_podman; ENGINE=podman
  fi
}

# podman's default runtime (crun) cannot set rlimits or use hybrid cgroups on some machines:
# runc without default ulimits works there. Used only when a plain container fails.
use_runc_if_needed() {
  "$ENGINE" run --rm --network=none "$BASE" true > "$LOGS/probe.log" 2>&1 && return 0
  [ "$ENGINE" = podman ] || die "$ENGINE cannot run a container: $LOGS/probe.log"
  command -v runc > /dev/null || install_podman
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' \
    > "$WORK/containers.conf"
  export CONTAINERS_CONF=$WORK/containers.conf
  say "podman runs containers with runc ($CONTAINERS_CONF)"
  "$ENGINE" run --rm --network=none "$BASE" true >> "$LOGS/probe.log" 2>&1 ||
    die "podman cannot run a container, with runc either: $LOGS/probe.log"
}

# -- 2. the base -------------------------------------------------------------------------------
debian_mirror() {
  local uri
  uri=$(grep -rhoE '^(deb |URIs:) *[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    2>/dev/null | awk '{print $NF}' | grep -E '/debian/?$' | head -n1)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_debian_base() {
  command -v debootstrap > /dev/null || install_podman
  local rootfs=$WORK/rootfs mirror
  mirror=$(debian_mirror)
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$rootfs" "$mirror" &&
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin &&
  tar -C "$rootfs" -c . | "$ENGINE" import --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$DEBBASE" && rm -rf "$rootfs"
}

choose_base() {
  if [ -n "${BASE:-}" ]; then return; fi
  if "$ENGINE" image inspect "$PYBASE" > /dev/null 2>&1; then BASE=$PYBASE
  elif "$ENGINE" image inspect "$DEBBASE" > /dev/null 2>&1; then BASE=$DEBBASE
  elif timeout 90 "$ENGINE" pull -q "$PYBASE" > "$LOGS/pull.log" 2>&1; then BASE=$PYBASE
  else
    say "$PYBASE cannot be pulled ($LOGS/pull.log): making $DEBBASE with debootstrap"
    step base-debootstrap make_debian_base
    [ $FAILED = 0 ] || die "the base image could not be made: $LOGS/base-debootstrap.log"
    BASE=$DEBBASE
  fi
}

# -- 3. the images -----------------------------------------------------------------------------
# This machine's pip settings as $WORK/pip-build/pip.conf (cert and constraints copied beside
# it) and the read-only volumes the build mounts it with: the folder at /mnt (empty in every
# Debian image: no mount point is left in a layer), local wheel folders and file:// indexes
# inside it (their mount points are made in the host folder, not in the image).
pip_build_volumes() {
  python3 - "$WORK/pip-build" <<'EOF'
import configparser, os, shutil, subprocess, sys
from urllib.parse import urlparse
KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "cert", "default-timeout")
stage = sys.argv[1]
shutil.rmtree(stage, ignore_errors=True)
os.makedirs(stage)
found = {}
for line in subprocess.run([sys.executable, "-m", "pip", "config", "list"], text=True,
                           capture_output=True).stdout.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in KEYS and (key.startswith(":env:") or name not in found):
        found[name] = value.strip("'\"")
for name in KEYS:
    found[name] = os.environ.get("PIP_" + name.upper().replace("-", "_"), found.get(name, ""))
mounts, conf = [], {"timeout": found["default-timeout"] or "60"}
for name in ("cert", "constraint"):   # files: copied into the folder
    if os.path.isfile(found[name]):
        shutil.copy(found[name], os.path.join(stage, name))
        conf[name] = f"/mnt/{name}"
for name in ("index-url", "extra-index-url", "find-links"):
    items = []
    for n, item in enumerate(found[name].split()):
        path = urlparse(item).path if item.startswith("file:") else item
        if not (path.startswith("/") and os.path.exists(path)):
            items.append(item)   # a registry URL: reached over the network
            continue
        # an index's pages link to ../../files/: its parent folder is mounted
        top = os.path.dirname(path.rstrip("/")) if name.endswith("index-url") else path
        inside = f"/mnt/{name}-{n}"
        os.makedirs(stage + inside[4:])
        mounts.append(f"-v {top}:{inside}:ro")
        items.append(item.replace(path, inside + path[len(top):]) if name.endswith("url")
                     else inside)
    if items:
        conf[name] = " ".join(items)
parser = configparser.ConfigParser()
parser["global"] = conf
with open(os.path.join(stage, "pip.conf"), "w") as f:
    parser.write(f)
print(" ".join([f"-v {stage}:/mnt:ro", *mounts]))
EOF
}

image_id() { "$ENGINE" image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

# build_image KIND: tyllm-KIND; the image it replaces (untagged now) is removed, not left behind.
build_image() {
  local kind=$1 old
  old=$(image_id "tyllm-$kind")
  # shellcheck disable=SC2086  # BUILD_OPTS is a word list
  "$ENGINE" build --network=host $BUILD_OPTS --build-arg "BASE=$BASE" \
    -f "docker/Dockerfile.$kind" -t "tyllm-$kind" . || return 1
  if [ -n "$old" ] && [ "$old" != "$(image_id "tyllm-$kind")" ]; then
    "$ENGINE" rmi "$old" || true
  fi
}

build_options() {
  if [ "$ENGINE" = podman ]; then
    BUILD_OPTS="--layers $(pip_build_volumes)"
  else  # docker build has no volumes: the registry, and a CPU torch index
    BUILD_OPTS="--build-arg TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
  fi
  say "build options: $BUILD_OPTS"
}

# -- 4. as a user ------------------------------------------------------------------------------
# The image read-only (scratch: /tmp and HOME in memory), as CHECK_USER, the data folder at /data.
as_user() {
  echo --user "$CHECK_USER" --read-only --shm-size=1g --tmpfs /tmp:rw,exec,mode=1777 \
    --tmpfs /home/tyllm:rw,exec,mode=1777 -v "$DATA:/data"
}

# in_image [RUN OPTIONS] IMAGE ARGS...
in_image() {
  # shellcheck disable=SC2046  # as_user is a word list without spaces inside words
  "$ENGINE" run --rm -i $(as_user) "$@"
}

prepare_data() {
  rm -rf "$DATA" && mkdir -p "$DATA" && chown "$CHECK_USER" "$DATA"
}

answer_says_paris() {
  in_image tyllm-compile run /data/smol-AOT/3die --prompt "What is the capital of France?" \
    --max-new-tokens 24 | tee /dev/stderr | grep -q Paris
}

quantize_awq() {
  in_image --entrypoint python tyllm-quant - <<'EOF'
from transformers import AutoModelForCausalLM, AutoTokenizer
from tyllm.quant import get_awq_config, get_dataloader, quantize_model, save_quantized_model

src = "/data/SmolLM2-135M-Instruct"
tokenizer = AutoTokenizer.from_pretrained(src)
model = AutoModelForCausalLM.from_pretrained(src)
data = get_dataloader(None, tokenizer, num_max_orig_samples=64, max_sequence_length=128)[:4]
quantized = quantize_model(model, get_awq_config(group_size=64, apply_clip=False), data, tokenizer)
save_quantized_model(quantized, "/data/SmolLM2-AWQ", tokenizer)
print("saved /data/SmolLM2-AWQ")
EOF
}

convert_awq() {
  in_image --entrypoint python tyllm-quant /opt/tyllm/scripts/checkpoint_convert.py \
    --src /data/SmolLM2-AWQ --dst /data/SmolLM2-AWQ-int4 --quant_type awq &&
  test -f "$DATA/SmolLM2-AWQ-int4/config.json"
}

# tyllm serve in the compile image, published on 127.0.0.1 only; the OpenAI client asks it.
serve_and_ask() {
  local cid ok=1
  # shellcheck disable=SC2046
  cid=$("$ENGINE" run -d $(as_user) -p "127.0.0.1:$PORT:8000" tyllm-compile \
    serve /data/smol-AOT/3die --port 8000 --served-model-name smol --max-num-seqs 2) || return 1
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && { ok=0; break; }
    [ "$("$ENGINE" inspect -f '{{.State.Running}}' "$cid")" = true ] || break
    sleep 5
  done
  [ $ok = 0 ] && python3 - "$PORT" <<'EOF'
import sys
from openai import OpenAI

client = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="none")
reply = client.chat.completions.create(
    model="smol", max_tokens=24, temperature=0,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
text = reply.choices[0].message.content
print("answer:", text)
sys.exit(0 if "Paris" in text else 1)
EOF
  ok=$?
  "$ENGINE" logs "$cid" > "$LOGS/serve-container.log" 2>&1
  "$ENGINE" rm -f "$cid" > /dev/null
  return $ok
}

files_belong_to_the_user() {
  local uid=${CHECK_USER%:*} gid=${CHECK_USER#*:} strangers
  strangers=$(find "$DATA" \( ! -uid "$uid" -o ! -gid "$gid" \) -printf '%u:%g %p\n')
  echo "files in $DATA: $(find "$DATA" | wc -l), not $CHECK_USER's: ${strangers:-none}"
  [ -z "$strangers" ]
}

# -- 5. what the images are ------------------------------------------------------------------
label() { "$ENGINE" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1"; }

describe_image() {
  local image=$1 bytes
  bytes=$("$ENGINE" image inspect -f '{{.Size}}' "$image")
  echo "$image: $((bytes / 1000000)) MB; tyllm $(label "$image" tyllm.version.tyllm)," \
    "torch $(label "$image" tyllm.version.torch), $(label "$image" tyllm.version.tvm)," \
    "vLLM: $(label "$image" tyllm.version.vllm)"
  "$ENGINE" run --rm --entrypoint sh "$image" -c \
    'cd /opt/venv/lib/python3*/site-packages && du -sm -- * | sort -rn | head -n 8 |
     awk "{printf \"    %5d MB  %s\n\", \$1, \$2}"; du -sm /usr | awk "{print \"    /usr: \" \$1 \" MB\"}"'
}

image_is_clean() {
  local image=$1 leaked
  # shellcheck disable=SC2086
  leaked=$( { "$ENGINE" history --no-trunc "$image"; "$ENGINE" image inspect "$image"; } |
            grep -F -e "$WORK" $(for v in $BUILD_OPTS; do case $v in /*) echo "-e ${v%%:*}" ;; esac; done) )
  [ -z "$leaked" ] || { echo "this machine's paths in the image's history: $leaked"; return 1; }
  "$ENGINE" run --rm --entrypoint sh "$image" -c \
    'id tyllm && test "$(id -u)" != 0 && test -z "$(ls -A /mnt)" && ! ls /var/lib/apt/lists/*_Packages 2>/dev/null &&
     test -z "$(ls -A /root/.cache 2>/dev/null)"' &&
  case $image in
    tyllm-quant) "$ENGINE" run --rm --entrypoint sh "$image" -c \
      '! command -v gcc && ! command -v g++ && ! command -v cc && ! python -c "import vllm"' ;;
    tyllm-compile) "$ENGINE" run --rm --entrypoint sh "$image" -c 'command -v g++' ;;
  esac
}

main() {
  choose_engine
  say "engine: $ENGINE ($("$ENGINE" --version))"
  choose_base
  say "base: $BASE"
  use_runc_if_needed
  if [ "$(id -u)" = 0 ]; then CHECK_USER=${CHECK_USER:-1234:1234}
  else CHECK_USER=${CHECK_USER:-$(id -u):$(id -g)}; fi
  build_options
  step build-compile build_image compile
  step build-quant build_image quant
  prepare_data
  step doctor in_image tyllm-compile doctor
  step prepare-smollm2 in_image tyllm-compile prepare-smollm2 --out /data/SmolLM2-135M-Instruct
  step compile-3die in_image tyllm-compile compile /data/SmolLM2-135M-Instruct \
    /data/smol-AOT/3die --dies 3 --max-kv 256 --quiet
  step run-paris answer_says_paris
  step verify in_image tyllm-compile verify /data/smol-AOT/3die
  step serve-openai serve_and_ask
  step quant-awq quantize_awq
  step quant-convert convert_awq
  step data-ownership files_belong_to_the_user
  step clean-compile image_is_clean tyllm-compile
  step clean-quant image_is_clean tyllm-quant
  { describe_image tyllm-compile; describe_image tyllm-quant; } > "$WORK/sizes.txt" 2>&1
  return $FAILED
}

main "$@"; exit $?  # on one line: bash reads no further, even if this file changed meanwhile
