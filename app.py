"""TGI Benchmark's web app: `python app.py` (port $GRADIO_SERVER_PORT, default 7860).

Host: $GRADIO_SERVER_NAME (127.0.0.1 locally, 0.0.0.0 on a Space). Results: $RESULTS_DIR.
"""

import atexit
import signal
import sys

from benchmark.ui import create_app, launch_options


def main() -> None:
    demo = create_app()
    options = launch_options(demo)
    # Stop the engine child and the TGI server this app launched when the app itself stops.
    atexit.register(demo.tgi_bench.runner.close)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.launch(**options)


if __name__ == "__main__":
    main()
