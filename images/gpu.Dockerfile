# A GPU target: like cpu.Dockerfile, but onnxruntime-gpu finds CUDA and cuDNN in the NVIDIA wheels that pip
# installed into the venv (onnxruntime-gpu[cuda,cudnn]), so no CUDA base image or registry is needed.
# The host supplies the driver through the NVIDIA container runtime.
ARG BASE
FROM ${BASE} AS install
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/farm \
 && /opt/farm/bin/pip install --no-index --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \
 && /opt/farm/bin/python -c "import onnxruntime, onnx, numpy"

FROM ${BASE}
COPY --from=install /opt/farm /opt/farm
COPY farm/ /opt/farm/app/farm/
ENV PATH=/opt/farm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/farm/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
CMD ["python3", "-m", "farm.job", "--help"]
