"""Ray job entrypoint: sdeid annotate.

On this machine (local Ray):
    python jobs/annotate.py --config configs/annotate-meddocan-cpu.yaml --out runs/annotate-meddocan
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/annotate.py --config configs/annotate-meddocan-gpu.yaml --out /shared/runs/annotate
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
