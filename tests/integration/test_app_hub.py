"""Durable share links from the app: runs go to a Hub dataset, links survive a wiped disk.

The Hub is tests/hub_stub.py (a local stand-in of its HTTP API; huggingface_hub honours
HF_ENDPOINT). A failed upload is shown beside the results with a button to try again; the
local copy is never lost.
"""

from __future__ import annotations

import shutil

import pytest
from gradio_client import Client

from support.app_harness import FIELDS_SMALL_RUN, AppProcess, named, submit_and_wait, text
from support.hub_stub import HubStub

pytestmark = pytest.mark.timeout(240)


def run(client: Client, tokenizer: str) -> dict:
    job = submit_and_wait(client, model_id=tokenizer, **FIELDS_SMALL_RUN)
    return named(client, "/run", job.result())


def test_failed_upload_is_shown_retried_and_links_survive_a_wiped_disk(tmp_path, tiny_tokenizer):
    with HubStub() as hub:
        hub.create_dataset("alice/bench-results")
        env = {"RESULTS_REPO": "alice/bench-results", "HF_TOKEN": hub.token,
               "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        with AppProcess(tmp_path / "results", tokenizer=tiny_tokenizer,
                        extra_env=env) as app:
            client = Client(app.url, verbose=False)
            hub.fail("commit", times=1, status=403)          # a permanent refusal, once
            final = run(client, tiny_tokenizer)
            assert "Benchmark complete" in text(final["Run status"]), app.log()
            run_id = text(final["Share link: opens these results read-only"]).split("?run=")[1]
            shown = text(final["Results dataset"])
            assert "failed" in shown and "kept on this disk" in shown, shown
            assert hub.token not in shown
            assert (app.results_dir / run_id / "run.json").is_file()   # local copy kept
            assert not any(run_id in name for name in hub.files("alice/bench-results"))

            again = client.predict(api_name="/upload")
            assert "Saved to the dataset alice/bench-results" in text(again)
            assert f"runs/{run_id}/run.json" in hub.files("alice/bench-results")

            # Next run: uploaded at once.
            second = run(client, tiny_tokenizer)
            assert "Saved to the dataset" in text(second["Results dataset"])

            # The Space restarts with an empty disk: the link still opens the run.
            app.stop()
            shutil.rmtree(app.results_dir)
            app.start()
            client = Client(app.url, verbose=False)
            opened = named(client, "/open", client.predict([run_id], api_name="/open"))
            assert run_id in text(opened["Run title"])
            assert "Highest generation speed" in text(opened["Headline"])
            assert (app.results_dir / run_id / "run.json").is_file()
            assert hub.token not in app.log()
