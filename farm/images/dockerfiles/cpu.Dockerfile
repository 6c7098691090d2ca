# A CPU target: the base's Python 3.11, the target's site-packages and farm's job code, copied in.
# No RUN step: farm unpacks and byte-compiles the wheels on the host (farm/sitepackages.py), so building a foreign
# platform's image runs nothing under QEMU. Layers from the biggest and steadiest to the one that changes most.
ARG BASE
FROM ${BASE}
COPY site-packages/ /opt/farm/site-packages/
COPY bin/ /opt/farm/bin/
COPY farm/ /opt/farm/app/farm/
ENV PATH=/opt/farm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/farm/app:/opt/farm/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
CMD ["/opt/farm/bin/python3", "-m", "farm.job", "--help"]
