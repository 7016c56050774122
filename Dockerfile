# TGI Benchmark as a Hugging Face Docker Space: the official TGI image (the launcher, the model
# server and its CUDA kernels) plus this app in its own virtual environment, listening on 7860.
# Pinned: the OpenAPI spec the tests check against (../shared/reference/tgi) is TGI 3.3.6.
FROM ghcr.io/huggingface/text-generation-inference:3.3.6

USER root
ENV DEBIAN_FRONTEND=noninteractive

# What Spaces' Dev Mode needs: bash (SSH), curl, wget and procps (VS Code server), git and
# git-lfs (commit from the Space).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bash curl wget procps git git-lfs ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && git lfs install --system

# Spaces run the container as uid 1000. Give that uid a name and a home: torch and TGI look the
# user up (getpass) and write caches under $HOME.
RUN (getent passwd 1000 >/dev/null || useradd --create-home --uid 1000 --shell /bin/bash user) \
    && mkdir -p /home/user \
    && chown 1000:1000 /home/user

# TGI issue 3082: since 3.1.1 TGI's Python (and the libpython3.11.so the launcher links to) lives
# under /root/.local/share/uv/python, and /root is closed to uid 1000, so the launcher dies with
# "libpython3.11.so.1.0: cannot open shared object file". Open /root for traversal and make the
# interpreter readable (only the entries that lack the bits are touched, to keep the layer small).
RUN chmod 755 /root \
    && if [ -d /root/.local ]; then \
        find /root/.local -type d ! -perm -005 -exec chmod o+rx {} + ; \
        find /root/.local -type f ! -perm -004 -exec chmod o+r {} + ; \
    fi

# The image sets HF_HOME=/data but never creates it: model downloads would fail as uid 1000.
# /data also holds the results (RESULTS_DIR); mount a Storage Bucket at /data/results to keep
# them across restarts, or set RESULTS_REPO (see README). /kernels holds TGI's pre-downloaded
# kernels: its folders must accept the lock files the kernels cache writes.
ENV HF_HOME=/data \
    RESULTS_DIR=/data/results
RUN mkdir -p /data/hub /data/results /app \
    && chown -R 1000:1000 /data /app \
    && if [ -d /kernels ]; then find /kernels -type d -exec chown 1000:1000 {} + ; fi

# The app's own virtual environment: TGI's venv (/usr/src/.venv, also $VIRTUAL_ENV) pins older
# transformers / huggingface_hub. Built with the image's uv and the image's Python 3.11 (found
# under root's HOME, hence HOME changes only after this step); the target is named explicitly so
# that nothing lands in TGI's venv.
ENV APP_VENV=/opt/app-venv
COPY --chown=1000:1000 requirements.txt /app/requirements.txt
RUN UV_PYTHON_DOWNLOADS=never /bin/uv venv --python 3.11 /opt/app-venv \
    && /bin/uv pip install --no-cache --python /opt/app-venv/bin/python -r /app/requirements.txt \
    && /opt/app-venv/bin/python -c "import gradio, huggingface_hub, transformers, plotly, pandas"

COPY --chown=1000:1000 . /app
RUN chown 1000:1000 /app
WORKDIR /app

# PORT: the image sets PORT=80, which text-generation-launcher reads as its --port (binding 80
# fails as uid 1000). The app always passes --port/--hostname (the platform also sets HOSTNAME);
# PORT=3000 restores TGI's documented default for a launcher started by hand in Dev Mode.
ENV PORT=3000 \
    HOME=/home/user \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1

USER 1000
EXPOSE 7860

# The image's ENTRYPOINT runs text-generation-launcher with CMD as its arguments: reset it so
# that CMD starts the app (Dev Mode restarts the app through CMD). The app launches TGI itself.
ENTRYPOINT []
CMD ["/opt/app-venv/bin/python", "app.py"]
