"""``--executor ray`` for the commands: join the running Ray cluster, or start a local one, quietly.

* A cluster started with ``ray start --head`` (or ``RAY_ADDRESS``) is joined with ``ray.init(address="auto")``;
  without one, a local Ray runtime is started for this command and stopped at its end.
* Ray's own INFO logs, the workers' output (vLLM's start-up log, shared-memory clean-up tracebacks) and Ray Data's
  progress bars stay out of the terminal; the command prints the same stage table and summary as a local run.
  ``xl-suite -v`` shows Ray's logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

from xl_suite.errors import InvalidArgumentError, MissingDependencyError


__all__ = ["ray_session", "check_executor"]

logger = logging.getLogger(__name__)


def check_executor(executor: str, num_actors: int, num_gpus_per_actor: float) -> None:
    """Check the executor flags before anything starts."""
    if executor not in ("local", "ray"):
        raise InvalidArgumentError(f"--executor must be local or ray, got {executor!r}.")
    if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
        raise InvalidArgumentError(f"--num-actors must be an integer >= 1, got {num_actors!r}.")
    if (
        isinstance(num_gpus_per_actor, bool)
        or not isinstance(num_gpus_per_actor, int | float)
        or num_gpus_per_actor < 0
    ):
        raise InvalidArgumentError(f"--num-gpus-per-actor must be a number >= 0, got {num_gpus_per_actor!r}.")
    if executor == "local" and (num_actors != 1 or num_gpus_per_actor):
        raise InvalidArgumentError("--num-actors and --num-gpus-per-actor apply with --executor ray: add it.")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("--executor ray needs Ray: pip install 'xl-suite[ray]'.") from e


@contextlib.contextmanager
def ray_session(*, num_actors: int, address: str | None = None, verbose: bool = False, echo=print):
    """Ray for one command: the running cluster (``address="auto"``) if there is one, else a local runtime.

    Args:
        num_actors: the actors the command will use (a local runtime gets at least one CPU more).
        address: a cluster address; None: the running cluster if any, else a local runtime; ``"local"``: always a
            local runtime (the tests, or a machine where someone else's cluster runs).
        verbose: show Ray's logs and the workers' output (``xl-suite -v``).
        echo: where the one line about the executor goes.

    Yields a short description of where the work runs.
    """
    import ray

    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    started, reaper = False, None
    if ray.is_initialized():
        where = "the Ray runtime of this process"
    elif address not in (None, "local"):
        ray.init(address=address, **quiet)
        where = f"the Ray cluster at {address}"
    else:
        try:
            if address == "local":
                raise ConnectionError("a local runtime was asked for")
            ray.init(address="auto", **quiet)
            where = "the running Ray cluster"
        except ConnectionError:
            from xl_suite.reaper import descendants, watch_started
            from xl_suite.synthesis.ray import ray_init_kwargs

            kwargs = ray_init_kwargs(num_cpus=max(os.cpu_count() or 1, num_actors + 1))
            kwargs.update(quiet)
            before = descendants()
            ray.init(**kwargs)
            started = True
            if os.environ.get("XL_SUITE_ENGINE_REAPER", "1") != "0":
                # the runtime's processes die with this one, even on SIGKILL (Ray's agents outlived a killed driver)
                reaper = watch_started(before)
            where = "a local Ray runtime" + ("" if address == "local" else " (no cluster was running)")
    _quiet_ray_data(verbose)
    resources = ray.cluster_resources()
    echo(
        f"executor: Ray, {num_actors} actor(s) on {where}: {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs"
    )
    try:
        with warnings.catch_warnings():
            if not verbose:  # Ray Data's advice on block counts and concurrency is for Ray users, not ours
                warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            yield where
    finally:
        if started:
            ray.shutdown()
        if reaper is not None:
            reaper.close()


def _quiet_ray_data(verbose: bool) -> None:
    """Ray Data's progress bars and execution logs off for this run (``-v`` keeps them)."""
    if verbose:
        return
    try:
        from ray.data import DataContext  # configures the "ray.data" logger: quiet it after this import

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
    except ImportError:  # pragma: no cover - ray without ray.data
        pass
