"""A long-lived subprocess that runs `keras_opt_migrate.cli.main` on request.

Hostile-input tests (bombs, fuzzing) must survive a reader that crashes the interpreter
(a C library abort) or hangs: each request runs in this worker, which the test side kills
and restarts on a timeout. TensorFlow is imported once per worker, not once per file.

Protocol: one JSON object per line on stdin, `{"argv": [...]}`; the answer is one JSON line
on stdout: `{"rc", "err", "out", "exc", "maxrss_kb"}` (`err`: what the command wrote to
sys.stderr; `exc`: an exception that escaped `main`, which is always a bug).
"""

import contextlib
import io
import json
import os
import resource
import sys
import traceback


def serve():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    reply_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    from keras_opt_migrate.cli import main
    for line in sys.stdin:
        request = json.loads(line)
        out, err, exc, rc = io.StringIO(), io.StringIO(), None, None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(request["argv"])
        except SystemExit as e:
            rc = e.code
        except BaseException:  # noqa: B902 - report everything, the test decides
            exc = traceback.format_exc()
        reply_to.write(json.dumps({"rc": rc, "err": err.getvalue(), "out": out.getvalue()[-2000:], "exc": exc,
                                   "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
        reply_to.flush()


class Worker:
    """The test side: `run(argv, timeout)` -> reply dict, or raises `WorkerDied` (crash / timeout)."""

    def __init__(self, cwd=None):
        import subprocess
        self._subprocess = subprocess
        self.cwd = cwd
        self.proc = None

    def start(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
        self.proc = self._subprocess.Popen([sys.executable, "-c", "import cli_worker; cli_worker.serve()"],
                                           stdin=self._subprocess.PIPE, stdout=self._subprocess.PIPE,
                                           stderr=self._subprocess.DEVNULL, text=True, env=env,
                                           cwd=os.path.dirname(os.path.abspath(__file__)))

    def run(self, argv, timeout=60):
        import select
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv]}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            status = self.proc.poll()
            self.stop()
            raise WorkerDied("%s: %s" % (" ".join(map(str, argv)),
                                         "no answer within %ds (hang)" % timeout if status is None
                                         else "the worker died with status %s (crash)" % status))
        return json.loads(line)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


class WorkerDied(AssertionError):
    pass


if __name__ == "__main__":
    serve()
