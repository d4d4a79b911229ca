"""The resident dispatcher: P long-lived Spark tasks pull trials from the driver, one at a time.

Raw SparkTrials pays for every trial with a fresh Spark job and, because its task never reads its
input, a fresh Python worker that imports hyperopt again and re-reads broadcasts; its driver loops
poll once a second. Here one Spark job starts ``parallelism`` tasks; each task connects back to the
driver over an authenticated socket and evaluates trials until told to stop. A new point is asked
of the same ``algo``, with the same trial history, the moment a task is free, so TPE sees every
finished result and nothing waits for a poll.

The tasks start as a classic SparkContext job or as one Spark Connect query (see ``launch``); the
conversation over the socket is the same either way.

The trial documents are written exactly as SparkTrials writes them (states, ``result``,
``misc.error``, book and refresh times) into the run's :class:`TrialBook`, so analysis code and the
run's watcher read them the same way.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from functools import partial
from multiprocessing import AuthenticationError
from typing import Any

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.tuning.dispatch.base import Dispatcher, DispatchPlan, Ending
from airflow_provider_sparktune.tuning.dispatch.channel import (
    HANDSHAKE_TIMEOUT_S,
    ChannelError,
    OverCap,
    authenticate,
    listen,
    max_pending,
    receive,
)
from airflow_provider_sparktune.tuning.dispatch.launch import (
    CALLBACK_HOST_CONF,
    CALLBACK_TIMEOUT_CONF,
    launcher_for,
)
from airflow_provider_sparktune.tuning.dispatch.trials import now
from airflow_provider_sparktune.tuning.pruners import Reports
from airflow_provider_sparktune.tuning.trial import PRUNED_STEP_KEY

log = logging.getLogger(__name__)

MAX_JOB_RESTARTS = 3  # restarts of the resident tasks' job after a failure that lost no trial
LOST_TASK_WAIT_S = 10.0  # after a failed job, how long the ends of its tasks' connections may take to show
_STOP = ("stop",)


def resident_task(
    address: tuple[str, int], authkey: bytes, objective: Any, partition: Iterable[Any]
) -> Iterator[int]:
    """Runs on an executor: evaluate trials sent by the driver until it says stop.

    The driver sends concrete parameters, so the executor imports neither hyperopt nor the space:
    a fresh Python worker pays only for the objective's own imports before its first trial. What
    goes back is JSON of known keys (``channel``): a result that cannot travel fails its trial here.
    """
    for _ in partition:  # read the input: PySpark reuses a Python worker only when it did
        pass
    from airflow_provider_sparktune.tuning.dispatch.channel import (
        connect,
        encode,
        error_message,
        result_message,
    )
    from airflow_provider_sparktune.tuning.trial import current_decide

    evaluated = 0
    talking = threading.Lock()  # callbacks of one objective may report from several threads
    current: list[int | None] = [None]  # the trial whose reports are still asked about
    with connect(address, authkey) as conn:

        def ask_driver(tid: int, step: int, value: float) -> bool:
            """One round trip: the report goes to the driver's pruner, its decision comes back."""
            with talking:
                if current[0] != tid:  # a thread that reports after its trial ended: stop it
                    return True
                conn.send_bytes(encode(["report", step, value]))
                return bool(conn.recv()[1])

        conn.send_bytes(encode(["ready"]))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            _, tid, params, pruning = message
            started = time.perf_counter()
            current[0] = tid
            token = current_decide.set(partial(ask_driver, tid) if pruning else None)
            try:
                result = objective(params)
            except BaseException as err:  # the trial fails, the task goes on
                reply = error_message(
                    tid, str(type(err)), traceback.format_exc(), time.perf_counter() - started
                )
            else:
                reply = result_message(tid, result, time.perf_counter() - started)
            finally:
                current_decide.reset(token)
            with talking:
                current[0] = None
                conn.send_bytes(reply)
            evaluated += 1
    yield evaluated


class ResidentDispatcher(Dispatcher):
    """Driver side: serves trials to the resident tasks and writes their results back."""

    def __init__(self, plan: DispatchPlan) -> None:
        import numpy as np
        from hyperopt.base import Domain

        super().__init__(plan)
        self.book, self.suggest = plan.book, plan.suggest
        self.domain = Domain(plan.objective, plan.space, pass_expr_memo_ctrl=None)
        self.rstate = np.random.default_rng(plan.spec.seed)
        self.max_evals, self.parallelism = int(plan.spec.max_evals), int(plan.spec.parallelism)
        self.stops = plan.stops  # checked as each result arrives: running trials finish, no new ones start
        self.pruner = plan.pruner
        self.reports = Reports()  # what running and finished trials reported, for the pruner
        self.lock = threading.Condition()
        self.queued = plan.already_queued  # trials finished by an earlier try count toward max_evals
        self.running: set[int] = set()
        # trials whose Spark task was lost, waiting to run again (same tid, same params) on the next free task
        self.requeued: deque[int] = deque()
        self.times_lost: dict[int, int] = {}  # tid -> how many of its attempts lost their task
        self.lost_retries = int(plan.spec.lost_trial_retries)
        self.stop_new = False  # no new trials (budget, stop rule, cancel)
        self.cancelled = False
        self.authkey = secrets.token_bytes(32)
        self.launcher = launcher_for(plan.spark, plan.job_group)
        self.job_error: BaseException | None = None
        # the run ends with it: the search algorithm failed, or the tasks can never run (unreachable, Python)
        self.fatal_error: BaseException | None = None
        self.connected = 0  # resident tasks that reached the listener
        self._listener: Any = None
        self._closing = threading.Event()
        self.handshake_timeout_s = HANDSHAKE_TIMEOUT_S  # from accept to a proven key
        self.max_pending = max_pending(self.parallelism)  # connections proving their key at once
        self._pending = 0  # connections proving their key now (the accept thread and theirs)
        self._pending_lock = threading.Lock()
        self.over_cap = OverCap(self.max_pending)

    # -- the run ---------------------------------------------------------------------------------

    def run(self, deadline: float | None) -> Ending:
        if self.cancelled:  # cancelled before it started: no Spark job
            return None
        callback = self.launcher.callback()
        self._listener = listen(callback.host, self.parallelism, callback.bind)
        address = (callback.host, self._listener.address[1])
        job_started = time.monotonic()
        acceptor = threading.Thread(target=self._accept, name="sparktune-accept", daemon=True)
        acceptor.start()
        job = threading.Thread(
            target=self._run_jobs, args=(address, callback.timeout), name="sparktune-job", daemon=True
        )
        job.start()
        ending: Ending = None
        try:
            with self.lock:
                while not self._finished() and job.is_alive():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        ending = "timeout"
                        break
                    waited = time.monotonic() - job_started
                    if callback.timeout is not None and not self.connected and waited > callback.timeout:
                        self.fatal_error = self._unreachable_error(address, callback.timeout)
                        break
                    self.lock.wait(0.5 if remaining is None else min(0.5, remaining))
        finally:
            if ending == "timeout":
                self.cancel("timeout")
            elif self.fatal_error is not None:
                self.cancel(f"the run cannot go on ({type(self.fatal_error).__name__})")
            with self.lock:
                self.stop_new = True
                self.lock.notify_all()
            job.join(30)
            if job.is_alive():
                self.launcher.cancel()
                job.join(10)
            self._close_listener(self._listener.address)
            self._fail_requeued()
        if self.fatal_error is not None:
            raise self.fatal_error
        if self.job_error is not None and not self.cancelled and not self._finished():
            raise self.job_error
        return ending

    def cancel(self, reason: str) -> None:
        """Stop new trials, cancel the Spark job group (running trials die with their tasks)."""
        with self.lock:
            if self.cancelled:
                return
            self.cancelled = self.stop_new = True
            self.book.cancel_open(reason, stamp=True)
            self.running.clear()
            self.requeued.clear()  # their documents were running: cancel_open cancelled them
            self.lock.notify_all()
        self.launcher.cancel()
        log.info("cancelled the trials of job group %s: %s", self.plan.job_group, reason)

    def _finished(self) -> bool:
        return not self.running and not self.requeued and (self.stop_new or self.queued >= self.max_evals)

    @staticmethod
    def _unreachable_error(
        address: tuple[str, int], timeout: float, tasks_error: BaseException | None = None
    ) -> SparkConnectionError:
        where = f"{address[0]}:{address[1]}"
        fix = (
            f"open the network path from the executors to this host, set {CALLBACK_HOST_CONF} to an "
            "address they can reach"
        )
        if tasks_error is not None:
            return SparkConnectionError(
                f"no resident trial task connected back to {where}: the tasks failed before any reached "
                f"this machine, with: {_first_line(tasks_error)}. If that is a network error, {fix}"
            )
        return SparkConnectionError(
            f"no resident trial task connected back to {where} within {timeout:g} s of starting them: the "
            f"executors cannot reach this machine at that address, or got no task slots; {fix}, or raise "
            f"{CALLBACK_TIMEOUT_CONF} (spark_connect_timeout) for a busy cluster"
        )

    # -- the Spark job of resident tasks -----------------------------------------------------------

    def _run_jobs(self, address: tuple[str, int], callback_timeout: float | None) -> None:
        """One job of ``parallelism`` tasks; start another if tasks died while work remains.

        Over Spark Connect (a ``callback_timeout``), tasks that failed before any reached the driver
        would fail the same way again: the run ends at once with their error.
        """
        task = partial(resident_task, address, self.authkey, self.plan.objective)
        # restarts after a job that lost no trial (a job that did is bounded by lost_trial_retries)
        restarts = 0
        while True:
            with self.lock:
                lost_before = sum(self.times_lost.values())
            try:
                self.launcher.run_tasks(task, self.parallelism)
                self.job_error = None
            except SparkConnectionError as err:  # no restart can help: the run ends with it
                with self.lock:
                    self.fatal_error, self.stop_new = err, True
                break
            except BaseException as err:
                self.job_error = err
                log.warning("resident trial tasks ended with %s: %s", type(err).__name__, str(err)[:500])
                with self.lock:
                    if callback_timeout is not None and not self.connected and not self.cancelled:
                        self.fatal_error = self._unreachable_error(address, callback_timeout, err)
                        self.stop_new = True
                        break
            with self.lock:
                if self.job_error is not None:  # the tasks are gone: let their connections' ends be seen
                    self.lock.wait_for(lambda: not self.running or self.cancelled, LOST_TASK_WAIT_S)
                more_work = bool(self.requeued) or (not self.stop_new and self.queued < self.max_evals)
                lost_trials = sum(self.times_lost.values()) > lost_before
            if not more_work or self.cancelled or (restarts == MAX_JOB_RESTARTS and not lost_trials):
                break
            if lost_trials:
                log.info("restarting resident trial tasks: the last job lost the task of a trial")
            else:
                restarts += 1
                log.info("restarting resident trial tasks (%d/%d)", restarts, MAX_JOB_RESTARTS)
        with self.lock:
            self.lock.notify_all()

    # -- one connection per resident task ----------------------------------------------------------

    def _accept(self) -> None:
        """Take connections as they come; each proves its key in a thread of its own, before a deadline.

        At most ``max_pending`` connections prove their key at once: a further one is closed at once
        (its descriptor too) and counted, so silent connections exhaust neither threads nor descriptors.
        """
        while not self._closing.is_set():
            try:
                conn = self._listener.accept()
            except OSError:  # the wake-up at the end, a connection reset before it was taken, no descriptor
                if not self._closing.is_set():
                    time.sleep(0.05)  # out of descriptors, the connection stays queued: no busy loop
                continue
            deadline = time.monotonic() + self.handshake_timeout_s
            if self._closing.is_set():
                conn.close()
                return
            try:
                peer = self._listener.last_accepted
            except AttributeError:  # closed meanwhile
                peer = "?"
            with self._pending_lock:
                full = self._pending >= self.max_pending
                if not full:
                    self._pending += 1
            if full:
                conn.close()
                self.over_cap.refused(_peer_text(peer))
                continue
            try:
                threading.Thread(
                    target=self._admit, args=(conn, peer, deadline), name="sparktune-serve", daemon=True
                ).start()
            except RuntimeError:  # no thread to be had: the same as over the cap
                self._admitted(conn, False)
                self.over_cap.refused(_peer_text(peer))

    def _admit(self, conn: Any, peer: Any, deadline: float) -> None:
        """The key check, all of it before ``deadline``, then the trials: a silent or wrong peer holds up no one."""
        try:
            authenticate(conn, self.authkey, deadline)
        except (AuthenticationError, EOFError, OSError) as err:
            log.warning(
                "refused a connection to the trial channel from %s: %s",
                _peer_text(peer),
                "wrong key"
                if isinstance(err, AuthenticationError)
                else f"no key within {self.handshake_timeout_s:g} s of connecting"
                if isinstance(err, TimeoutError)
                else f"gone before proving its key ({type(err).__name__}: {err})",
            )
            self._admitted(conn, False)
            return
        except BaseException:
            self._admitted(conn, False)
            raise
        self._admitted(conn, True)
        with self.lock:
            self.connected += 1
        self._serve(conn)

    def _admitted(self, conn: Any, proven: bool) -> None:
        """One connection fewer proving its key; a refused one is closed, a proven one ends a flood."""
        with self._pending_lock:
            self._pending -= 1
        if proven:
            self.over_cap.admitted()
        else:
            conn.close()

    def _close_listener(self, address: tuple[str, int]) -> None:
        """Closing a socket does not wake a thread blocked in accept(): connect once to end it."""
        import socket

        self._closing.set()
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            pass
        self._listener.close()
        self.over_cap.close()

    def _serve(self, conn: Any) -> None:
        """One resident task's trials, one at a time; whatever goes wrong fails the trial it was on."""
        tid: int | None = None
        try:
            if receive(conn)[0] != "ready":
                raise ChannelError("no ready message first")
            while True:
                trial = self._next_trial_or_stop()
                if trial is None:
                    conn.send(_STOP)
                    return
                tid = trial["tid"]
                try:
                    params = self._params(trial["spec"])
                except Exception as err:  # hyperopt would have failed the same way on the executor
                    self._finish(["error", tid, str(type(err)), traceback.format_exc(), 0.0])
                    tid = None
                    continue
                conn.send(("trial", tid, params, self.pruner is not None))
                reply = receive(conn)
                while reply[0] == "report":  # trial.report(): answer with the pruner's decision
                    conn.send(("decision", self._decide(tid, reply[1], reply[2])))
                    reply = receive(conn)
                if reply[0] not in ("ok", "error"):
                    raise ChannelError(f"a {reply[0]!r} message instead of the trial's result")
                if reply[1] != tid:
                    raise ChannelError(f"a result for trial {reply[1]} while it was running trial {tid}")
                self._finish(reply)
                tid = None
        except (EOFError, OSError):
            if tid is not None:
                self._lost(tid)
        except ChannelError as err:
            log.warning("a resident trial task broke the channel's rules: %s; closing its connection", err)
            if tid is not None:
                self._fail(tid, "channel", f"the resident task running this trial sent {err}")
        except Exception as err:
            log.exception("serving a resident trial task failed")
            if tid is not None:
                self._fail(
                    tid, "driver", f"the driver failed while serving this trial: {type(err).__name__}: {err}"
                )
        finally:
            conn.close()

    def _next_trial_or_stop(self) -> dict[str, Any] | None:
        """The next trial; None when there is none, also when the search algorithm failed (run() raises)."""
        try:
            return self._next_trial()
        except Exception as err:
            log.error("the search algorithm failed: %s: %s", type(err).__name__, err)
            self.cancel(f"the search algorithm failed: {type(err).__name__}")
            return None

    def _next_trial(self) -> dict[str, Any] | None:
        """Ask ``algo`` for one new point now, with every result so far in the history."""
        from hyperopt import base

        with self.lock:
            again = self._take_requeued()
        if again is not None:  # a re-run is not a new trial: no pacing, nothing asked of the searcher
            return again
        if self.plan.pace is not None:
            self.plan.pace()
        with self.lock:
            again = self._take_requeued()  # lost while this task waited for room
            if again is not None:
                return again
            if self.stop_new or self.queued >= self.max_evals:
                return None
            try:
                new_ids = self.book.new_ids(1)
                self.book.refresh()
                docs = self.suggest(new_ids, self.domain, self.book.trials, self.rstate.integers(2**31 - 1))
                if not docs:
                    self.stop_new = True
                    self.lock.notify_all()
                    return None
                self.book.add(docs)
            except Exception as err:  # recorded before the lock is released: no other task asks again
                self.fatal_error, self.stop_new = err, True
                self.lock.notify_all()
                raise
            self.queued += 1
            trial = self.book.find(new_ids[0])
            assert trial is not None
            stamp = now()
            trial["state"], trial["book_time"], trial["refresh_time"] = base.JOB_STATE_RUNNING, stamp, stamp
            self.running.add(trial["tid"])
            return {"tid": trial["tid"], "spec": base.spec_from_misc(trial["misc"])}

    def _params(self, spec: dict[str, Any]) -> Any:
        """The objective's argument for one point: what hyperopt's ``Domain.evaluate`` would pass."""
        from hyperopt import pyll

        return pyll.rec_eval(self.domain.expr, memo=self.domain.memo_from_config(spec))

    def _finish(self, reply: list[Any]) -> None:
        """A checked reply (``channel.receive``) into the trial's document."""
        from hyperopt import base

        kind, tid = reply[0], reply[1]
        with self.lock:
            trial = self.book.find(tid)
            if trial is None or tid not in self.running:
                return  # cancelled meanwhile: the cancellation stands
            self.running.discard(tid)
            trial["misc"]["sparktune_eval_s"] = float(reply[-1])
            trial["refresh_time"] = now()
            ok = False
            loss = None
            if kind == "ok":
                trial["result"], trial["state"] = reply[2], base.JOB_STATE_DONE
                ok = reply[2].get("status") == base.STATUS_OK
                pruned = PRUNED_STEP_KEY in reply[2]
                loss = reply[2].get("loss") if ok and not pruned else None  # a partial loss stops nothing
                if ok and not pruned:
                    self.reports.complete(tid)
            else:
                trial["misc"]["error"] = (reply[2], reply[3])  # before the state: the watcher reads unlocked
                trial["state"] = base.JOB_STATE_ERROR
            self._observe(ok, loss)
            self.book.refresh()
            self.lock.notify_all()

    def _fail(self, tid: int, kind: str, reason: str) -> None:
        """The trial fails with ``reason`` (its task was lost, or its reply broke the rules); the run goes on."""
        from hyperopt import base

        with self.lock:
            trial = self.book.find(tid)
            if trial is None or tid not in self.running:
                return
            self.running.discard(tid)
            trial["misc"]["error"] = (kind, reason)  # before the state: the watcher reads unlocked
            trial["refresh_time"] = now()
            trial["state"] = base.JOB_STATE_ERROR
            self._observe(False, None)
            self.book.refresh()
            self.lock.notify_all()

    def _lost(self, tid: int) -> None:
        """The Spark task running trial ``tid`` is gone (its executor or Python worker died).

        That is the cluster's failure, not the objective's: the same trial (same tid, same params, still
        running in the searcher's eyes, no MLflow run yet) runs again on the next free task, up to
        ``lost_trial_retries`` times; it counts once toward ``max_evals``. After that it fails.
        """
        with self.lock:
            trial = self.book.find(tid)
            if trial is None or tid not in self.running:
                return  # cancelled meanwhile: the cancellation stands
            lost = self.times_lost[tid] = self.times_lost.get(tid, 0) + 1
            if lost > self.lost_retries or self.cancelled:
                self._fail(tid, "lost", lost_task_message(lost, self.lost_retries))
                return
            self.running.discard(tid)
            self.requeued.append(tid)
            self.lost += 1
            trial["misc"]["sparktune_lost"] = lost
            self._forget_reports(tid)
            self.lock.notify_all()
        log.warning(
            "trial %s: its Spark task was lost (attempt %d of %d); re-running it",
            tid,
            lost,
            self.lost_retries + 1,
        )

    def _take_requeued(self) -> dict[str, Any] | None:
        """With the lock held: a lost trial to run again, unless the run was cancelled meanwhile."""
        from hyperopt import base

        while self.requeued and not self.cancelled:
            tid = self.requeued.popleft()
            trial = self.book.find(tid)
            if trial is None or trial["state"] != base.JOB_STATE_RUNNING:
                continue
            self.running.add(tid)
            return {"tid": tid, "spec": base.spec_from_misc(trial["misc"])}
        return None

    def _fail_requeued(self) -> None:
        """At the end of the run: lost trials no task was left to run again fail, none stays running."""
        with self.lock:
            while self.requeued:
                tid = self.requeued.popleft()
                self.running.add(tid)
                self._fail(
                    tid,
                    "lost",
                    f"{lost_task_message(self.times_lost.get(tid, 1), None)}; the resident trial tasks "
                    "ended before it could run again (see the warning 'resident trial tasks ended with')",
                )

    def _forget_reports(self, tid: int) -> None:
        """A re-run reports its steps again from the start: the pruner forgets the lost attempt's."""
        self.reports.values.pop(tid, None)
        self.reports.completed.discard(tid)
        for at_rung in self.reports.rungs.values():
            at_rung.pop(tid, None)

    def _decide(self, tid: int, step: int, value: float) -> bool:
        """The pruner's decision on one report; a trial cancelled meanwhile is told to stop."""
        with self.lock:
            if tid not in self.running:
                return True
            self.reports.add(tid, step, value)
            assert self.pruner is not None
            try:
                return self.pruner.prune(tid, step, self.reports)
            except Exception:
                log.exception("the pruner failed on trial %s step %s; the trial goes on", tid, step)
                return False

    def _observe(self, ok: bool, loss: float | None) -> None:
        """Called with the lock held, once per finished trial: a stop rule ends new trials."""
        if self.stops.observe(ok, loss, remaining=self.queued < self.max_evals) is not None:
            self.stop_new = True


def lost_task_message(times: int, retries: int | None) -> str:
    """Why a trial whose task was lost failed: how often, and (``retries`` given) the setting to raise."""
    what = "was lost" if times == 1 else f"was lost {times} times"
    text = (
        f"the Spark task running this trial {what} (its executor or Python worker died, e.g. killed by "
        "the OOM killer)"
    )
    if retries is None:
        return text
    return (
        f"{text}, and lost_trial_retries={retries} allows no more re-runs; raise lost_trial_retries if "
        "the cluster loses executors, or give the executors more memory (spark.executor.memory, "
        "spark.executor.pyspark.memory) if these parameters need it"
    )


def _peer_text(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


_PYTHON_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|error|Exit)(: |$)")


def _first_line(err: BaseException) -> str:
    """The line of a (Spark, often multi-line) error that says what happened, not a stack frame.

    A Python traceback from an executor ends with its exception line; a JVM failure names its
    exception inside its first lines.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("at ", "File "))]
    python = [line for line in lines if _PYTHON_ERROR_LINE.match(line)]
    telling = [line for line in lines if "Exception" in line or "Error" in line]
    return (python[-1:] or telling or lines or [type(err).__name__])[0][:400]
