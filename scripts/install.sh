#!/usr/bin/env bash
# Sets up everything Sightline needs to run, idempotently:
#   1. checks Java 17 and Maven (the local Kafka broker runs on them);
#   2. a shared virtualenv keyed by the lock file's hash and the torch variant (cpu|cuda),
#      under ~/.cache/sightline, so every clone on this machine reuses one 7 GB install;
#   3. a per-clone .venv layered over it (it sees the shared packages plus this checkout);
#   4. protobuf/gRPC code generated from proto/*.proto;
#   5. the Apache Kafka jars, resolved by Maven into .kafka/lib;
#   6. the benchmark's Go load generator, .tools/sightline-loadgen (only when Go is installed).
# A second run finds every stamp in place and does no network work.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[install] %s\033[0m\n' "$*" >&2; exit 1; }

# 1. Java 17 and Maven
command -v java >/dev/null || die "Java 17 is missing: apt-get install -y openjdk-17-jre-headless"
command -v mvn >/dev/null || die "Maven is missing: apt-get install -y maven"
jv=$(java -version 2>&1 | awk -F'"' '/version/ {print $2}' | cut -d. -f1)
[ "${jv:-0}" -ge 17 ] || die "Java $jv found, Kafka 4 needs 17+: apt-get install -y openjdk-17-jre-headless"
PY=${SIGHTLINE_PYTHON:-python3.11}
command -v "$PY" >/dev/null || die "$PY is missing: install Python 3.11 (apt-get install -y python3.11 python3.11-venv)"

CACHE=${SIGHTLINE_CACHE:-$HOME/.cache/sightline}
mkdir -p "$CACHE"

# uv makes a cold install of ~150 packages take a minute or two instead of ten.
UV="$CACHE/tools/bin/uv"
if [ ! -x "$UV" ]; then
  say "bootstrapping uv into $CACHE/tools"
  "$PY" -m venv "$CACHE/tools"
  "$CACHE/tools/bin/pip" install --quiet uv
fi

# 2. shared virtualenv
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VARIANT=cuda; else VARIANT=cpu; fi
HASH=$(cat requirements.lock | sha256sum | cut -c1-12)
SHARED="$CACHE/venv-$HASH-$VARIANT"
if [ ! -f "$SHARED/.complete" ]; then
  say "creating the shared virtualenv $SHARED ($VARIANT; a cold install downloads ~3 GB and takes a few minutes)"
  rm -rf "$SHARED"
  "$UV" venv --quiet --python "$PY" "$SHARED"
  VIRTUAL_ENV="$SHARED" "$UV" pip sync --quiet requirements.lock
  # torchrec's metadata requires the CUDA fbgemm-gpu, which cannot load without the NVIDIA driver.
  VIRTUAL_ENV="$SHARED" "$UV" pip install --quiet --no-deps torchrec==1.9.2
  if [ "$VARIANT" = cuda ]; then
    VIRTUAL_ENV="$SHARED" "$UV" pip uninstall --quiet fbgemm-gpu-cpu
    VIRTUAL_ENV="$SHARED" "$UV" pip install --quiet --no-deps fbgemm-gpu==1.9.0
  fi
  touch "$SHARED/.complete"
else
  say "shared virtualenv up to date ($SHARED)"
fi
# 2b. bytecode, once: uv installs no .pyc files, and where PYTHONDONTWRITEBYTECODE is set (CI images,
#     containers) Python never writes them either, so every process would compile torch, torchrec and
#     feast from source again: importing torchrec and feast took 15.4 s without them, 8.7 s with.
if [ ! -f "$SHARED/.bytecode" ]; then
  say "compiling the shared virtualenv's bytecode (once, ~30 s; each Python start then saves ~7 s)"
  SHARED_SITE=$("$SHARED/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # a few test and template files in the wheels are not Python 3 (compileall reports them and
  # exits 1); they are never imported, so only an absent interpreter is an error here
  "$SHARED/bin/python" -m compileall -q -j 0 "$SHARED_SITE" >/dev/null 2>&1 || [ $? -eq 1 ] \
    || die "compiling the bytecode of $SHARED_SITE failed: run '$SHARED/bin/python -m compileall -q $SHARED_SITE' to see why"
  touch "$SHARED/.bytecode"
fi

# 3. per-clone layer
if [ "$(cat .venv/.shared 2>/dev/null)" != "$SHARED" ]; then
  say "creating .venv over the shared virtualenv"
  rm -rf .venv
  "$UV" venv --quiet --python "$SHARED/bin/python" .venv
  SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  SHARED_SITE=$("$SHARED/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$SHARED_SITE')" > "$SITE/_sightline_shared.pth"
  echo "$ROOT" > "$SITE/_sightline_checkout.pth"
  # Console scripts of the dependencies (feast, locust, pytest) run from the shared env.
  for tool in feast locust pytest; do ln -sf "$SHARED/bin/$tool" ".venv/bin/$tool"; done
  cat > .venv/bin/sightline <<SH
#!/usr/bin/env bash
exec "$ROOT/.venv/bin/python" -m sightline "\$@"
SH
  chmod +x .venv/bin/sightline
  echo "$SHARED" > .venv/.shared
else
  say ".venv up to date"
fi

# 3b. Debian packages for the tests (redis-server, postgresql, chromium)
bash scripts/system_deps.sh

# 4. generated protobuf code
bash scripts/gen_proto.sh

# 5. Kafka jars
KAFKA_LIB=.kafka/lib
POM=sightline/stack/kafka-pom.xml
STAMP=$(sha256sum "$POM" | cut -c1-12)
if [ "$(cat .kafka/.stamp 2>/dev/null)" != "$STAMP" ]; then
  say "resolving Apache Kafka jars with Maven into $KAFKA_LIB"
  rm -rf "$KAFKA_LIB"
  mvn -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$ROOT/$KAFKA_LIB" -DincludeScope=runtime
  echo "$STAMP" > .kafka/.stamp
else
  say "Kafka jars up to date ($(ls $KAFKA_LIB | wc -l) jars in $KAFKA_LIB)"
fi

# 6. the open-loop load generator of bench.serve (Go; nothing else needs it). Go keeps its module
#    and build caches in their default places (~/go/pkg/mod, ~/.cache/go-build), so every clone
#    on this machine reuses them; a rebuild only happens when the sources' stamp changes.
LOADGEN=.tools/sightline-loadgen
if command -v go >/dev/null; then
  STAMP=$(sha256sum bench/loadgen/*.go bench/loadgen/go.mod bench/loadgen/go.sum | sha256sum | cut -c1-12)
  if [ ! -x "$LOADGEN" ] || [ "$(cat .tools/.sightline-loadgen.stamp 2>/dev/null)" != "$STAMP" ]; then
    say "building $LOADGEN with $(go version | awk '{print $3}') (the first build on a machine fetches google.golang.org/grpc)"
    mkdir -p .tools
    if (cd bench/loadgen && go build -trimpath -o "$ROOT/$LOADGEN" .); then
      echo "$STAMP" > .tools/.sightline-loadgen.stamp
    else
      rm -f "$LOADGEN" .tools/.sightline-loadgen.stamp
      printf '\033[31m[install] building %s failed (see above); python -m bench.serve needs it (or pass --client python)\033[0m\n' "$LOADGEN" >&2
    fi
  else
    say "load generator up to date ($LOADGEN)"
  fi
else
  say "note: Go is not installed, so $LOADGEN (bench.serve's open-loop client) is not built;" \
      "nothing else needs it. To build it: install Go 1.26+ (https://go.dev/dl/, e.g." \
      "tar -C /usr/local -xzf go1.26.*.linux-amd64.tar.gz and add /usr/local/go/bin to PATH), then run make install"
fi
say "done: run '.venv/bin/sightline --help'"
