"""Ray job entrypoint: sdeid adapt.

On this machine (local Ray):
    python jobs/adapt.py --config configs/adapt-meddocan-cpu.yaml --out runs/adapt-meddocan
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/adapt.py --config configs/adapt-meddocan-gpu.yaml --out /shared/runs/adapt
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["adapt", *sys.argv[1:]]))
