"""Clean demo runs as a new user makes them: `make clean && make demo`, N times, the first with
the converted-model cache removed (as on a fresh machine). Run by hand from the repository:

    .venv/bin/python benchmarks/bench_demo.py [N]   # default: 5

`make demo` includes `make setup`, which is quick once .venv exists; its time is measured apart
and reported beside the build's. Prints a line per run and writes benchmarks/results/demo_runs.json
after each, with its exit code, times, its summary's last lines, any leak noise at exit and
the path of its whole output (its rejects beside it).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path.home() / ".cache" / "glan" / "models"  # where the GGUF is converted once per machine


def timed(*cmd: str) -> tuple[float, int, str]:
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.monotonic() - start, done.returncode, done.stdout + done.stderr


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    logs = Path(tempfile.mkdtemp(prefix="glan-demo-runs-"))
    out = Path(__file__).parent / "results" / "demo_runs.json"
    results = []
    for i in range(runs):
        if i == 0:
            shutil.rmtree(MODEL_CACHE, ignore_errors=True)
        subprocess.run(["make", "clean"], cwd=ROOT, check=True, capture_output=True)
        setup_s, setup_rc, _ = timed("make", "setup")
        total_s, rc, output = timed("make", "demo")  # setup again (nothing to do), then the build
        (logs / f"run{i + 1}.log").write_text(output)
        # The next run's `make clean` removes the database: keep what was rejected, and why.
        rejects = subprocess.run([str(ROOT / ".venv" / "bin" / "glan"), "rejects"], cwd=ROOT, capture_output=True, text=True)
        (logs / f"run{i + 1}-rejects.txt").write_text(rejects.stdout + rejects.stderr)
        lines = output.strip().splitlines()
        results.append({
            "run": i + 1,
            "model_cache_removed": i == 0,
            "exit_code": rc,
            "setup_s": round(setup_s, 1),
            "demo_s": round(total_s, 1),
            "leak_lines": sum("nanobind" in ln or "leaked" in ln for ln in lines),
            "last_lines": lines[-12:],
            "log": str(logs / f"run{i + 1}.log"),
        })
        r = results[-1]
        print(f"run {r['run']}: exit {rc}, make demo {r['demo_s']} s (setup alone {r['setup_s']} s), "
              f"leak lines {r['leak_lines']}", flush=True)
        out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "runs": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
