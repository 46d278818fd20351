# The Workbay daemon image: `workbay-daemon` (content initialization, backups, snapshots, quotas) as root, which
# it needs for mount and user namespaces, nsenter and cgroup control.
#
# Built by deploy/images/build.mjs (`npx nx run @workbay/daemon:image`), which stages the build context: `app/` is
# the npm-packed workspace packages installed with `npm install --omit=dev` (production dependencies only).
#
#   BASE_IMAGE       a Node 20 image with /bin/sh and /usr/bin/env (default node:20-bookworm-slim)
#   SYSTEM_PACKAGES  Debian packages the daemon calls (git, ssh for ssh remotes, tar, zstd, getfattr,
#                    nsenter/unshare/setpriv, ip, nft, mkfs.ext4); empty for a base that already carries what it
#                    needs (apt-get is then not run)
ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE}

ARG SYSTEM_PACKAGES="git openssh-client ca-certificates tar zstd attr util-linux iproute2 nftables e2fsprogs"
RUN if [ -n "$SYSTEM_PACKAGES" ]; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $SYSTEM_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi

COPY app/ /opt/workbay/

ENV NODE_ENV=production \
    PATH=/opt/workbay/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 0:0
WORKDIR /var/lib/workbay
# gRPC (see deploy/kubernetes/config.yaml)
EXPOSE 7721
ENTRYPOINT ["workbay-daemon"]
CMD ["--config", "/etc/workbay/daemon.yaml"]
