"""TGI Benchmark's web app: `python app.py` (port $GRADIO_SERVER_PORT, default 7860).

Host: $GRADIO_SERVER_NAME (127.0.0.1 locally, 0.0.0.0 on a Space). Results: $RESULTS_DIR.
"""

from benchmark.app import main

if __name__ == "__main__":
    main()
