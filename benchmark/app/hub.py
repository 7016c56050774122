"""Durable results in a Hugging Face dataset: a Space's disk is wiped at every restart.

When the owner sets ``RESULTS_REPO`` (a dataset id such as ``alice/tgi-benchmark-results``) and
the ``HF_TOKEN`` secret, every finished run is uploaded to ``runs/<run_id>/`` of that dataset,
and a share link ``?run=<run_id>`` whose run is no longer on local disk is fetched back from it::

    repo = hub.from_env(os.environ)              # None unless RESULTS_REPO and a token are set
    if repo:
        status = repo.upload_run("results/20261128-163012-gpt2-3f9a")   # never raises for the Hub
        show(status.message)                     # where the run went, or why it did not
        folder = repo.fetch_run(run_id, results_root())   # ResultFileError when it cannot

Uploads retry transient failures (HTTP 5xx/429, connection errors) a bounded number of times with
exponential backoff; permanent ones (bad token, no write access) stop at once with a sentence
saying what to fix. The local copy is only ever read. A file that contains the token is never
uploaded. Messages pass through ``errors.redact`` so the token never reaches the page or logs.

The Hub address is ``endpoint`` (default: ``HF_ENDPOINT`` or https://huggingface.co); the tests
point it at a local stand-in of the Hub's HTTP API (tests/hub_stub.py).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError, ResultFileError, redact
from ..core.results import RUN_FILE, RunResult, check_run_id, run_dir

MISSING_TTL_S = 60            # how long a run the dataset lacks is not asked for again
MAX_REMEMBERED_MISSING = 10_000

__all__ = ["DEFAULT_ENDPOINT", "RUNS_FOLDER", "ResultsRepo", "UploadStatus", "from_env",
           "parse_repo_id"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
RUNS_FOLDER = "runs"
MAX_FETCH_BYTES = 1024 * 1024 * 1024  # a run folder larger than this is not a benchmark run
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TRANSIENT_STATUS = {408, 409, 412, 425, 429}
T = TypeVar("T")


@dataclass(frozen=True)
class UploadStatus:
    """The outcome of one ``upload_run``: ``message`` is the sentence to show."""

    ok: bool
    run_id: str
    message: str
    attempts: int = 0
    url: str | None = None  # the run's folder on the Hub, when uploaded


class _Permanent(Exception):
    """The Hub step is given up: ``str(err)`` says why. ``transient``: the retries ran out."""

    def __init__(self, message: str, *, attempts: int = 1, transient: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.transient = transient


def parse_repo_id(value: str) -> str:
    """``owner/name`` from ``owner/name``, ``datasets/owner/name`` or a dataset URL."""
    text = (value or "").strip().rstrip("/")
    text = re.sub(r"^https?://[^/]+/", "", text)
    text = re.sub(r"^datasets/", "", text)
    if not _REPO_ID.match(text) or ".." in text:
        raise ConfigError(
            "results_repo",
            f"RESULTS_REPO must be a dataset id like your-name/tgi-benchmark-results, got "
            f"{value!r}. Fix the variable in the Space settings.",
        )
    return text


def from_env(env: Mapping[str, str]) -> "ResultsRepo | None":
    """The results dataset configured by ``RESULTS_REPO``, or None when it is not set up.

    The token comes from ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``); without one this returns
    None, since nothing could be written. ``HF_ENDPOINT`` changes the Hub address. A malformed
    ``RESULTS_REPO`` raises ``ConfigError``.
    """
    raw = env.get("RESULTS_REPO", "").strip()
    token = (env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or "").strip()
    if not raw or not token:
        return None
    return ResultsRepo(parse_repo_id(raw), token, env.get("HF_ENDPOINT") or None)


class ResultsRepo:
    """One Hub dataset holding runs under ``runs/<run_id>/``.

    ``attempts`` bounds the tries per upload or download (first try included); the waits
    between them grow from ``backoff_s`` by doubling, capped at ``max_backoff_s``.
    ``create_missing`` creates the dataset (private) at the first upload when it does not exist.
    """

    def __init__(self, repo_id: str, token: str, endpoint: str | None = None, *,
                 attempts: int = 4, backoff_s: float = 2.0, max_backoff_s: float = 30.0,
                 create_missing: bool = True, sleep: Callable[[float], None] = time.sleep) -> None:
        from huggingface_hub import HfApi

        self.repo_id = parse_repo_id(repo_id)
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.attempts = max(1, int(attempts))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.create_missing = create_missing
        self._token = token
        self._sleep = sleep
        self._api = HfApi(endpoint=self.endpoint, token=token, library_name="tgi-benchmark")
        self._lock = threading.Lock()
        self._statuses: dict[str, UploadStatus] = {}
        # Runs the dataset did not have, remembered for a while, so that a stream of links to
        # missing runs cannot make the Space call the Hub (with the owner's token) for each one.
        self._missing: dict[str, tuple[int, str]] = {}
        self._failed: set[Path] = set()   # folders whose last upload failed: tried again later

    def __repr__(self) -> str:  # never shows the token
        return f"ResultsRepo({self.repo_id!r}, endpoint={self.endpoint!r})"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.endpoint}/datasets/{self.repo_id}"

    def run_url(self, run_id: str) -> str:
        """Where the run's files can be browsed on the Hub."""
        return f"{self.url}/tree/main/{RUNS_FOLDER}/{check_run_id(run_id)}"

    def last_status(self, run_id: str) -> UploadStatus | None:
        """The outcome of the latest ``upload_run`` of ``run_id`` in this process, if any."""
        with self._lock:
            return self._statuses.get(run_id)

    # -- upload ------------------------------------------------------------------------------

    def upload_with_retries(self, folder: str | os.PathLike[str]) -> list[UploadStatus]:
        """Upload ``folder``, and again every run whose upload failed before (so a Hub outage
        during one run is mended after the next). Returns each upload's status."""
        with self._lock:
            folders = [*sorted(self._failed - {Path(folder)}), Path(folder)]
        return [self.upload_run(path) for path in folders]

    def upload_run(self, folder: str | os.PathLike[str]) -> UploadStatus:
        """Upload a finished run's folder to ``runs/<run_id>/``; never raises for Hub trouble.
        A failed upload is remembered and tried again by ``upload_with_retries``."""
        path = Path(folder)
        status = self._upload(path)
        with self._lock:
            if status.ok:
                self._failed.discard(path)
            else:
                self._failed.add(path)
        return status

    def _upload(self, path: Path) -> UploadStatus:
        """One upload of ``path`` (with its own retries on transient Hub errors).

        Returns an ``UploadStatus`` whose ``message`` says where the run went or why it did
        not (and that the local copy is kept). Files are only read, never moved or deleted.
        """
        try:
            result = RunResult.load(path)
        except ResultFileError as err:
            return self._remember(UploadStatus(False, path.name, f"Not uploaded: {err}"))
        run_id = result.run_id
        if result.status == "running":
            return self._remember(UploadStatus(
                False, run_id, f"Not uploaded: run {run_id} is still running; it is uploaded "
                               f"when it finishes."))
        try:
            files = self._run_files(path)
        except _Permanent as err:
            return self._remember(UploadStatus(False, run_id, self._clean(str(err))))
        except OSError as exc:
            return self._remember(UploadStatus(False, run_id, self._clean(
                f"Not uploaded: the files of run {run_id} cannot be read ({exc}).")))

        def attempt() -> None:
            self._commit(run_id, files)

        try:
            _, tries = self._retrying(attempt, f"upload run {run_id}")
        except _Permanent as err:
            return self._remember(UploadStatus(False, run_id, self._failure(run_id, err),
                                               attempts=err.attempts))
        log.info("Uploaded run %s to %s (%d files, %d attempts)", run_id, self.repo_id,
                 len(files), tries)
        return self._remember(UploadStatus(
            True, run_id, f"Saved to the dataset {self.repo_id} ({RUNS_FOLDER}/{run_id}/): this "
                          f"run's link keeps working after the Space restarts.",
            attempts=tries, url=self.run_url(run_id)))

    def _run_files(self, folder: Path) -> list[tuple[str, Path]]:
        """The run's files (name, path): regular, non-hidden, no temp files, no token inside."""
        files: list[tuple[str, Path]] = []
        for item in sorted(folder.iterdir()):
            if (item.is_symlink() or not item.is_file() or not _FILE_NAME.match(item.name)
                    or item.name.endswith((".tmp", ".partial", "~"))):
                continue
            if self._contains_token(item):
                raise _Permanent(
                    f"Not uploaded: {item.name} contains the HF_TOKEN value, so the run stays "
                    f"on this disk only. Remove the token from that file and upload again.")
            files.append((item.name, item))
        return files

    def _contains_token(self, path: Path) -> bool:
        needle = self._token.encode()
        if len(needle) < 4:
            return False
        tail = b""
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                if needle in tail + chunk:
                    return True
                tail = chunk[-(len(needle) - 1):]
        return False

    def _commit(self, run_id: str, files: list[tuple[str, Path]]) -> None:
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(f"{RUNS_FOLDER}/{run_id}/{name}", str(path))
                      for name, path in files]
        try:
            self._api.create_commit(
                self.repo_id, operations, repo_type="dataset",
                commit_message=f"Add benchmark run {run_id}")
        except Exception as exc:
            if self.create_missing and _status(exc) == 404 and _is_repo_missing(exc):
                self._create_repo()
                raise _Retry("the dataset did not exist and was just created") from exc
            raise

    def _create_repo(self) -> None:
        log.info("Creating the private dataset %s for results", self.repo_id)
        try:
            self._api.create_repo(self.repo_id, repo_type="dataset", private=True, exist_ok=True)
        except Exception as exc:
            if _status(exc) in (401, 403):
                raise _Permanent(
                    f"The dataset {self.repo_id} does not exist and HF_TOKEN may not create "
                    f"it. Create the dataset on the Hub, or use a token with write access."
                ) from exc
            raise

    def _failure(self, run_id: str, err: _Permanent) -> str:
        again = ("press Upload again to retry" if err.transient
                 else "fix this, then press Upload again")
        return self._clean(
            f"Upload of run {run_id} to {self.repo_id} failed: {err} The run is kept on this "
            f"disk (until the Space restarts); {again}.")

    def _remember(self, status: UploadStatus) -> UploadStatus:
        with self._lock:
            self._statuses[status.run_id] = status
        if not status.ok:
            log.warning("%s", status.message)
        return status

    # -- download ----------------------------------------------------------------------------

    def fetch_run(self, run_id: str, dest_root: str | os.PathLike[str]) -> Path:
        """Make ``<dest_root>/<run_id>/`` hold the run, downloading it from the dataset if needed.

        Raises ``ResultFileError`` with a plain sentence when the id is invalid, the run is not
        in the dataset, or the Hub cannot be reached after the retries. Files land in a hidden
        staging folder first and move into place only when ``RunResult.load`` accepts them.
        """
        root = Path(dest_root)
        dest = run_dir(root, run_id)
        if (dest / RUN_FILE).is_file():
            return dest
        with self._lock:
            missing = self._missing.get(run_id)
        if missing and time.perf_counter_ns() - missing[0] < MISSING_TTL_S * 1_000_000_000:
            raise ResultFileError(missing[1])
        root.mkdir(parents=True, exist_ok=True)
        try:
            names = self._retrying(lambda: self._list_run(run_id), f"list run {run_id}")[0]
            staging = Path(tempfile.mkdtemp(prefix=f".fetch-{run_id}-", dir=root))
            try:
                for name in names:
                    self._retrying(lambda n=name: self._download(run_id, n, staging),
                                   f"download {name}")
                fetched = staging / RUNS_FOLDER / run_id
                RunResult.load(fetched)
                try:
                    os.replace(fetched, dest)
                except OSError:
                    if not (dest / RUN_FILE).is_file():  # not a concurrent fetch of the same run
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except ResultFileError:
            raise
        except _Permanent as err:
            message = self._clean(str(err))
            with self._lock:
                if len(self._missing) >= MAX_REMEMBERED_MISSING:
                    self._missing.clear()
                self._missing[run_id] = (time.perf_counter_ns(), message)
            raise ResultFileError(message) from None
        except OSError as exc:
            raise ResultFileError(self._clean(
                f"Run {run_id} could not be written to {root}: {exc}.")) from None
        log.info("Fetched run %s from %s", run_id, self.repo_id)
        return dest

    def _list_run(self, run_id: str) -> list[str]:
        from huggingface_hub.hf_api import RepoFile

        prefix = f"{RUNS_FOLDER}/{run_id}"
        try:
            entries = list(self._api.list_repo_tree(self.repo_id, path_in_repo=prefix,
                                                    repo_type="dataset"))
        except Exception as exc:
            if _status(exc) == 404:
                raise _Permanent(self._not_found(run_id, exc)) from exc
            raise
        files = [e for e in entries if isinstance(e, RepoFile)
                 and e.path.rsplit("/", 1)[-1] == e.path[len(prefix) + 1:]
                 and _FILE_NAME.match(e.path.rsplit("/", 1)[-1])]
        names = [e.path.rsplit("/", 1)[-1] for e in files]
        if RUN_FILE not in names:
            raise _Permanent(f"Run {run_id} in the dataset {self.repo_id} has no {RUN_FILE}; "
                             f"it cannot be opened.")
        if sum(e.size or 0 for e in files) > MAX_FETCH_BYTES:
            raise _Permanent(f"Run {run_id} in the dataset {self.repo_id} is larger than "
                             f"{MAX_FETCH_BYTES // 2**20} MB; download it by hand.")
        return names

    def _download(self, run_id: str, name: str, staging: Path) -> None:
        self._api.hf_hub_download(self.repo_id, f"{RUNS_FOLDER}/{run_id}/{name}",
                                  repo_type="dataset", local_dir=str(staging))

    def _not_found(self, run_id: str, exc: Exception) -> str:
        if _is_repo_missing(exc):
            return (f"Run {run_id} is not on this disk, and the dataset {self.repo_id} cannot be "
                    f"read with this Space's HF_TOKEN (missing, private or no access).")
        return (f"Run {run_id} is neither on this disk nor in the dataset {self.repo_id}. "
                f"Check the link, or run the benchmark again.")

    def list_remote_runs(self) -> list[str]:
        """Run ids stored in the dataset (newest first by id), or [] when none or unreachable."""
        from huggingface_hub.hf_api import RepoFolder

        try:
            entries = list(self._api.list_repo_tree(self.repo_id, path_in_repo=RUNS_FOLDER,
                                                    repo_type="dataset"))
        except Exception as exc:
            log.warning("Could not list runs in %s: %s", self.repo_id, self._clean(str(exc)))
            return []
        ids = []
        for entry in entries:
            name = entry.path.rsplit("/", 1)[-1]
            if isinstance(entry, RepoFolder) and _FILE_NAME.match(name) and ".." not in name:
                ids.append(name)
        return sorted(ids, reverse=True)

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> tuple[bool, str]:
        """Whether the token works and the dataset is reachable: (ok, sentence for the page)."""
        try:
            user = self._api.whoami().get("name", "?")
        except Exception as exc:
            return False, self._clean(
                f"HF_TOKEN is not accepted by {self.endpoint} ({_describe(exc)}): runs are "
                f"kept on this disk only. Add a valid token as the HF_TOKEN secret.")
        try:
            self._api.repo_info(self.repo_id, repo_type="dataset")
        except Exception as exc:
            if _status(exc) in (401, 404):
                return True, (f"Signed in to the Hub as {user}; the dataset {self.repo_id} will "
                              f"be created (private) at the first upload.")
            return False, self._clean(f"The dataset {self.repo_id} cannot be reached "
                                      f"({_describe(exc)}); uploads will be retried.")
        return True, f"Runs are saved to the dataset {self.repo_id} as {user}."

    # -- retries -----------------------------------------------------------------------------

    def _retrying(self, action: Callable[[], T], what: str) -> tuple[T, int]:
        """Run ``action`` up to ``attempts`` times; return (value, tries) or raise _Permanent."""
        wait = self.backoff_s
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                return action(), attempt
            except _Permanent as err:
                err.attempts = attempt
                raise
            except _Retry as err:
                last = str(err)
                log.info("%s: %s; trying again", what, last)
                continue
            except Exception as exc:
                if not _is_transient(exc):
                    raise _Permanent(_describe_permanent(exc, self.repo_id),
                                     attempts=attempt) from None
                last = _describe(exc)
                log.warning("%s failed (try %d of %d): %s", what, attempt, self.attempts,
                            self._clean(last))
            if attempt < self.attempts:
                self._sleep(min(wait, self.max_backoff_s))
                wait *= 2
        raise _Permanent(f"the Hub kept failing after {self.attempts} tries (last: {last}).",
                         attempts=self.attempts, transient=True)

    def _clean(self, text: str) -> str:
        return redact(text, [self._token])


class _Retry(Exception):
    """Try again at once (something was fixed, e.g. the missing dataset was created)."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _is_repo_missing(exc: BaseException) -> bool:
    from huggingface_hub.errors import RepositoryNotFoundError

    return isinstance(exc, RepositoryNotFoundError)


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    status = _status(exc)
    if status is not None:
        return status >= 500 or status in _TRANSIENT_STATUS
    # No HTTP answer at all: connection refused, timeout, DNS, reset. Programming errors are not.
    return not isinstance(exc, (TypeError, ValueError, AttributeError, KeyError))


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if status is not None:
        return f"HTTP {status}: {first}"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _describe_permanent(exc: BaseException, repo_id: str) -> str:
    from huggingface_hub.errors import OfflineModeIsEnabled

    status = _status(exc)
    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be sent to the Hub; unset it."
    if status == 401 or (status == 404 and _is_repo_missing(exc)):
        return (f"HF_TOKEN is not accepted for the dataset {repo_id} (HTTP {status}); check the "
                f"secret and that the dataset exists.")
    if status == 403:
        return (f"HF_TOKEN may not write to the dataset {repo_id} (HTTP 403); use a token with "
                f"write access to it.")
    return f"the Hub refused it ({_describe(exc)})."
