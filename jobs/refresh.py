"""Ray job entrypoint: sdeid refresh (a new dated run, gate, publish, keep the last K releases).

Exit 0: published. Exit 3: the gate failed (the message names each failed check; the previous
release stays the latest). Exit 2: bad input or configuration.
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/refresh.py --config configs/meddocan-gpu.yaml --root /shared/runs/refresh --keep 5
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]]))
