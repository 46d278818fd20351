# The Workbay manager image: `workbay up` (control plane, port proxy, metrics) as a non-root user.
#
# Built by deploy/images/build.mjs (`npx nx run @workbay/manager:image`), which stages the build context: `app/` is
# the npm-packed workspace packages installed with `npm install --omit=dev` (production dependencies only, pure
# JavaScript, so the tree does not depend on the build host's libc). Nothing is fetched while building the image.
#
#   BASE_IMAGE  a Node 20 image with /bin/sh, mkdir, chown and /usr/bin/env (default node:20-bookworm-slim)
ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE}

# A fixed uid outside the base's own users (node:20 images own 1000 as `node`), so that file ownership on
# volumes means the same thing whatever the base. os.userInfo() needs the passwd entry.
RUN echo 'workbay:x:10001:10001:Workbay manager:/home/workbay:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'workbay:x:10001:' >> /etc/group \
 && mkdir -p /home/workbay /var/lib/workbay/manager /var/lib/workbay/workspaces /etc/workbay \
 && chown 10001:10001 /home/workbay /var/lib/workbay/manager

COPY app/ /opt/workbay/

ENV NODE_ENV=production \
    HOME=/home/workbay \
    PATH=/opt/workbay/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 10001:10001
WORKDIR /home/workbay
# gRPC, port proxy, metrics (see deploy/kubernetes/config.yaml)
EXPOSE 7720 7780 9501
ENTRYPOINT ["workbay"]
CMD ["up", "--config", "/etc/workbay/manager.yaml"]
