"""Ray job entrypoint: sdeid generate.

On this machine (local Ray):
    python jobs/generate.py --config configs/generate-meddocan-cpu.yaml --out runs/generate-meddocan
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/generate.py --config configs/generate-meddocan-gpu.yaml --out /shared/runs/generate
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
