# A GPU target: like cpu.Dockerfile, but onnxruntime-gpu finds CUDA and cuDNN in the NVIDIA wheels unpacked into its
# site-packages (onnxruntime-gpu[cuda,cudnn]), so no CUDA base image or registry is needed.
# The host supplies the driver through the NVIDIA container runtime.
ARG BASE
FROM ${BASE}
COPY site-packages/ /opt/farm/site-packages/
COPY bin/ /opt/farm/bin/
COPY farm/ /opt/farm/app/farm/
ENV PATH=/opt/farm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/farm/app:/opt/farm/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
CMD ["/opt/farm/bin/python3", "-m", "farm.job", "--help"]
