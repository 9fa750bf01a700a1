"""`clara-aws batch` across K GPU tasks behind a load balancer, over a throttled link (issue 19).

K reference servers, each a process of its own playing one GPU task (``--inference-delay``,
``--inference-slots 1``: one model run at a time, taking about 3 s), stand behind the test
load balancer (round-robin, as the Quick Start's target group). Between the batch command (a process of
its own, as a user runs it) and the balancer sits the throttling proxy of ``bench_wan``: the link's
bandwidth each way and its round-trip time. For K = 1, 2, 4 it prints cases per minute against

    limit = min(link up / bytes up per case, link down / bytes down per case, K / one task's seconds per case)

where the bytes are counted by the proxy and one task's seconds are what the server reports as its model
time for a case sent directly. It does so with ``--jobs K`` (one request per task) and ``--jobs 2K`` (a
second request queued at each task while the first runs, so the task never waits for an upload), and once
more with a task killed half-way (its requests answered 502 by the balancer, two connections dropped),
left in the target group for a health check's time, then replaced by a new task at a new address.
"floor" is the shortest time any schedule needs for the run's N cases (the link carries every upload and
the last case still needs its model run and answer, or each task runs its share once the first upload
arrived): the limit is a rate that a finite run approaches from below. Throughput counts from the
command's start to its end, less the command's own start (as long as `clara-aws models` through the
same link).
Target: at least 0.9 of the limit, no case lost.

Run: python Testing/benchmarks/bench_batch_throughput.py [--cases-per-task 24] [--link 8/20/40]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/: the load balancer

from bench_wan import ThrottlingProxy  # noqa: E402
from load_balancer import LoadBalancer  # noqa: E402

from ClaraAWSLib.backends import AUTO_SEGMENT, connect  # noqa: E402
from ClaraAWSLib.core.nifti import encode_volume  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom  # noqa: E402

MODEL = "phantom_abdomen_seg"
CASE_SIZE = (128, 128, 48)
#: The GPU model's time a task adds to the reference model's own (about 0.25 s here): ~3 s per case.
INFERENCE_DELAY = 2.75
#: How long the balancer keeps sending to a dead task: an ALB's health check notices after a few probes.
HEALTH_CHECK_SECONDS = 1.0


class Task:
    """One GPU task: ``python -m ClaraAWSLib.server`` in a process of its own, on a free port."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ClaraAWSLib.server", "--port", "0", "--inference-delay", str(INFERENCE_DELAY),
             "--inference-slots", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                self.url = match.group(0)
                break
        else:
            raise SystemExit("a reference server did not start")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # its request log

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(20)


def write_cases(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    phantoms = [make_phantom(size=CASE_SIZE, spacing=(2.5, 2.5, 5.0), seed=seed) for seed in range(4)]
    for seed, phantom in enumerate(phantoms):
        sitk.WriteImage(phantom.ct.to_sitk(), str(folder / f"case_{seed:03d}.nii.gz"), True)
    for n in range(len(phantoms), count):
        shutil.copyfile(folder / f"case_{n % len(phantoms):03d}.nii.gz", folder / f"case_{n:03d}.nii.gz")


def one_task_seconds(folder: Path) -> float:
    """The model time a task reports for a case sent directly (median of three)."""
    task = Task()
    try:
        client = connect(task.url)
        model = client.check_model_task(client.model(MODEL), AUTO_SEGMENT)
        volume = make_phantom(size=CASE_SIZE, spacing=(2.5, 2.5, 5.0), seed=0).ct
        seconds = sorted(float(client.run_task(AUTO_SEGMENT, model, image=encode_volume(volume)).params["elapsed"])
                         for _ in range(3))
        client.close()
        return seconds[1]
    finally:
        task.stop()


def clara_aws(*arguments: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ClaraAWSLib.cli"]
    return subprocess.run(command + list(arguments), capture_output=True, text=True)


class Run:
    """K tasks behind the balancer behind the link; ``batch(...)`` runs the command through them."""

    def __init__(self, tasks: int, link) -> None:
        self.tasks = [Task() for _ in range(tasks)]
        self.balancer = LoadBalancer([task.url for task in self.tasks]).__enter__()
        up, down, rtt = link
        self.proxy = ThrottlingProxy(int(self.balancer.url.rsplit(":", 1)[1]), up * 1e6, down * 1e6, rtt / 1000)

    def replace_half_way(self, outdir: Path, cases: int, events: dict) -> None:
        """Kill the last task once half the cases are written; a new task takes its place."""
        while len(list(outdir.glob("case_*.nii.gz"))) < cases // 2:
            time.sleep(0.05)
        index = len(self.tasks) - 1
        killed = time.perf_counter()
        self.tasks[index].kill()
        self.balancer.drop_next(2)
        time.sleep(HEALTH_CHECK_SECONDS)
        self.balancer.take_out(index)
        self.tasks[index] = Task()
        self.balancer.put_back(index, self.tasks[index].url)
        events["downtime"] = time.perf_counter() - killed

    def start_seconds(self) -> dict:
        """What the command's start costs through the link: `clara-aws models` (start, connect, model list)."""
        self.proxy.reset_counts()
        started = time.perf_counter()
        clara_aws("models", "--server", self.proxy.url)
        return dict(wall=time.perf_counter() - started, up=self.proxy.bytes["up"], down=self.proxy.bytes["down"])

    def batch(self, inputs: Path, outdir: Path, jobs: int, cases: int, restart: bool = False) -> dict:
        events: dict = {}
        replacer = threading.Thread(target=self.replace_half_way, args=(outdir, cases, events), daemon=True)
        self.proxy.reset_counts()
        if restart:
            replacer.start()
        started = time.perf_counter()
        finished = clara_aws("batch", "--server", self.proxy.url, str(inputs), "-o", str(outdir), "--model", MODEL,
                             "--jobs", str(jobs), "--no-resume")
        wall = time.perf_counter() - started
        if restart:
            replacer.join()
        ok = sum(1 for line in (outdir / "report.csv").read_text().splitlines()[1:] if ",ok," in line)
        return dict(wall=wall, code=finished.returncode, ok=ok, up=self.proxy.bytes["up"], down=self.proxy.bytes["down"],
                    own=dict(self.balancer.own_answers), stderr=finished.stderr, **events)

    def close(self) -> None:
        self.proxy.close()
        self.balancer.__exit__(None, None, None)
        for task in self.tasks:
            task.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases-per-task", type=int, default=24)
    parser.add_argument("--link", default="8/20/40", help="up Mbit/s / down Mbit/s / RTT ms")
    parser.add_argument("--tasks", default="1,2,4")
    args = parser.parse_args()
    link = tuple(float(part) for part in args.link.split("/"))
    counts = [int(k) for k in args.tasks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="clara-bench-batch-"))
    try:
        write_cases(work / "all", args.cases_per_task * max(counts))
        task_s = one_task_seconds(work / "all")
        print(f"link: {link[0]:g} Mbit/s up, {link[1]:g} Mbit/s down, {link[2]:g} ms RTT; case {CASE_SIZE}, "
              f"one task {task_s:.2f} s per case ({60 / task_s:.1f} cases/min)")
        print(f"{'tasks':>5} {'jobs':>4} {'cases':>5} {'ok':>3} {'wall s':>7} {'cases/min':>9} {'limit':>6} {'bound':>5} "
              f"{'ratio':>6} {'floor s':>7} {'of floor':>8}  load balancer's own answers")
        per_case = None
        for tasks in counts:
            cases = args.cases_per_task * tasks
            inputs = work / f"in-{tasks}"
            inputs.mkdir()
            for n in range(cases):
                os.link(work / "all" / f"case_{n:03d}.nii.gz", inputs / f"case_{n:03d}.nii.gz")
            plans = [(tasks, False), (2 * tasks, False)] + ([(2 * tasks, True)] if tasks == max(counts) else [])
            for jobs, restart in plans:
                run = Run(tasks, link)
                try:
                    start = run.start_seconds()
                    result = run.batch(inputs, work / f"out-{tasks}-{jobs}-{restart}", jobs, cases, restart)
                finally:
                    run.close()
                if result["code"] not in (0, 1):
                    raise SystemExit(f"clara-aws batch failed: {result['stderr'][-2000:]}")
                if per_case is None:  # the clean first run: bytes per case, the command's start excluded
                    per_case = ((result["up"] - start["up"]) / cases, (result["down"] - start["down"]) / cases)
                seconds = result["wall"] - start["wall"]
                rate = 60 * cases / seconds
                link_rate = 60 * min(link[0] * 1e6 / 8 / per_case[0], link[1] * 1e6 / 8 / per_case[1])
                task_rate = 60 * tasks / task_s
                limit = min(link_rate, task_rate)
                # No schedule beats this: the link carries every upload and the last case still needs its
                # model run and answer; or each task runs its share once the first upload has arrived.
                up_s, down_s = per_case[0] * 8 / (link[0] * 1e6), per_case[1] * 8 / (link[1] * 1e6)
                floor = max(cases * up_s + task_s, up_s + math.ceil(cases / tasks) * task_s) + down_s + link[2] / 1000
                own = ", ".join(f"{key}: {value}" for key, value in sorted(result["own"].items(), key=str)) or "none"
                note = f"; a task killed, replaced after {result['downtime']:.1f} s" if restart else ""
                print(f"{tasks:>5} {jobs:>4} {cases:>5} {result['ok']:>3} {seconds:>7.1f} {rate:>9.1f} {limit:>6.1f} "
                      f"{'link' if link_rate < task_rate else 'tasks':>5} {rate / limit:>6.2f} {floor:>7.1f} "
                      f"{floor / seconds:>8.2f}  {own}{note}")
        print(f"bytes per case: {per_case[0] / 1e6:.2f} MB up, {per_case[1] / 1e6:.3f} MB down; "
              f"the command's start (as `clara-aws models`) excluded from each run")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
