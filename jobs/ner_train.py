"""Ray job entrypoint: train the gold NER model (the machine annotator).

On this machine (local Ray):
    python jobs/ner_train.py --config configs/ner-meddocan-cpu.yaml --out runs/ner-meddocan
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/ner_train.py --config configs/ner-meddocan-gpu.yaml --out /shared/runs/ner
"""

import sys

from sdeid.cli import main

if __name__ == "__main__":
    sys.exit(main(["ner", "train", *sys.argv[1:]]))
