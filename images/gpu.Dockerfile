# A GPU target: like cpu.Dockerfile, but onnxruntime-gpu finds CUDA and cuDNN in the NVIDIA wheels that pip
# installed into the venv (onnxruntime-gpu[cuda,cudnn]), so no CUDA base image or registry is needed.
# The host supplies the driver through the NVIDIA container runtime.
ARG BASE
FROM ${BASE} AS install
# For a foreign platform every RUN step runs under QEMU: QEMU_CPU picks the emulated core (QEMU's "max" is slow).
ARG QEMU_CPU
COPY wheels/ /tmp/wheels/
# Under QEMU each of these choices saves about a minute: no ensurepip (pip runs from its wheel in the wheelhouse),
# and byte-compiling in parallel after the install, leaving out the packages' own test suites that nothing imports.
# As pip does, a file that does not compile stays source.
RUN python3 -m venv --without-pip /opt/farm \
 && PIP_WHEEL="$(ls /tmp/wheels/pip-*.whl)" \
 && /opt/farm/bin/python "$PIP_WHEEL/pip" install --no-index --no-cache-dir --disable-pip-version-check \
      --no-compile /tmp/wheels/*.whl \
 && { /opt/farm/bin/python -m compileall -q -j0 -x '/tests?/' /opt/farm/lib/python3.11/site-packages >/dev/null \
      || true; } \
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
