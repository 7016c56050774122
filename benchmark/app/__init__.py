"""The Gradio app (``python app.py``): the only floor that imports gradio.

    page.py    the page: layout, event handlers, ``build_app``, ``main``
    form.py    the form as data: typed text -> a validated run plan
    render.py  what the page shows: results, progress, history (markdown/HTML, no gradio)
    jobs.py    the run queue: one run at a time, TGI + the engine as a child process
    access.py  who may run what on a Space
    hub.py     durable results in a Hub dataset
"""

from .page import App, build_app, create_app, launch_options, main

__all__ = ["App", "build_app", "create_app", "launch_options", "main"]
