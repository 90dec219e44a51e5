"""sdeid: synthetic training data for clinical de-identification (Vakili et al., ACL 2025).

Importing the package loads no torch, Ray, vLLM or DeepSpeed; each stage imports them when run.
"""

__version__ = "0.1.0"
