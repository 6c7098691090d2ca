# A CPU target: the base's Python 3.11, a venv with the target's wheels, and farm's job code.
# Built with networking off: every wheel comes from the wheelhouse in the build context.
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

# A second stage, so the wheels themselves do not stay in a layer of the image.
FROM ${BASE}
COPY --from=install /opt/farm /opt/farm
COPY farm/ /opt/farm/app/farm/
ENV PATH=/opt/farm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/farm/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
CMD ["python3", "-m", "farm.job", "--help"]
