# The SDK worker image for running microturn's Beam stages (ingest, synthesize, shard) on a
# cluster: Beam's own Python SDK container of the Beam version pinned in requirements.lock, plus
# the system tools the stages call inside the workers (ffmpeg, espeak-ng) and microturn with its
# locked dependencies, installed the way scripts/setup.sh does (a CPU build of torch).
# README.md, "Running on a cluster", gives the runner flags that use it.
#
#   docker build -f docker/beam-worker.Dockerfile -t REGISTRY/microturn-beam-worker:0.1.0 .
#
# The build context is the repository root; docker/beam-worker.Dockerfile.dockerignore keeps
# .venv and build outputs out of it (BuildKit reads an ignore file named after the Dockerfile).
# The launching machine must run the same Python minor version and Beam version as the image:
# change BEAM_VERSION together with apache-beam in requirements.lock.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

# ffmpeg/ffprobe: decoding and probing (ingest), video clips (shard); espeak-ng and its library:
# the TTS of synthesize, which loads libespeak-ng.so.1 directly.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg espeak-ng libespeak-ng1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/microturn
# Only what the package build needs: the package folders of pyproject.toml's package-dir, the
# metadata files, and scripts/torchaudio_cpu.py.
COPY pyproject.toml requirements.lock README.md ./
COPY cli cli
COPY schemas schemas
COPY pipelines pipelines
COPY synth synth
COPY trainer trainer
COPY kernels kernels
COPY testing testing
COPY scripts/torchaudio_cpu.py scripts/torchaudio_cpu.py

# The CPU build of torch comes from PyTorch's index (the registry's build of the same version
# pulls several GB of CUDA wheels); the steps after it are scripts/setup.sh's, without the test
# extra and not editable.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir -c requirements.lock torch \
 && pip install --no-cache-dir -c requirements.lock . \
 && pip install --no-cache-dir -c requirements.lock --no-deps whisperx \
 && pip install --no-cache-dir --no-deps --force-reinstall \
      "webrtcvad-wheels==$(grep -i '^webrtcvad-wheels==' requirements.lock | cut -d= -f3)" \
 && python scripts/torchaudio_cpu.py \
 && python -c "import apache_beam, microturn.pipelines.ingest, microturn.pipelines.synthesize, microturn.pipelines.shard" \
 && ffmpeg -version >/dev/null && espeak-ng --version

# The base image's ENTRYPOINT (/opt/apache/beam/boot) stays: runners start it as the SDK harness,
# and `docker run IMAGE --worker_pool` starts it as an external worker pool on port 50000.
