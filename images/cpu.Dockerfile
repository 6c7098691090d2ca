# A CPU target: the base's Python 3.11, a venv with the target's wheels, and farm's job code.
# Built with networking off: every wheel comes from the wheelhouse in the build context.
ARG BASE
FROM ${BASE} AS install
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/farm \
 && /opt/farm/bin/pip install --no-index --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \
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
