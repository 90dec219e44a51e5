"""Ray job entrypoint: sdeid run (the whole pipeline, stages reused when unchanged).

On this machine (local Ray):
    python jobs/run.py --config configs/meddocan-cpu.yaml --out runs/meddocan-cpu
On a cluster (the job's driver joins the cluster through RAY_ADDRESS, set by `ray job submit`):
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/run.py --config configs/meddocan-gpu.yaml --out /shared/runs/meddocan-gpu
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
