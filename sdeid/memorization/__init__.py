"""How much the generator remembers of the notes it was adapted on.

- Canaries (sdeid.memorization.canaries): notes with a random secret planted in the adaptation
  corpus only, repeated 1, 4 and 16 times; after adaptation each secret's exposure among random
  candidates of its format (Carlini et al., The Secret Sharer, USENIX Security 2019). The audit
  also looks for the secrets verbatim in the generated notes and drops the notes that hold one.
- Membership inference (sdeid.memorization.attacks): can the generator's loss on a note tell
  whether it was adapted on it? The loss-threshold attack (Yeom et al. 2018) and the attack
  calibrated by the base model's loss (Carlini et al. 2021), as AUC and TPR at 1 % FPR.
Both are measured after adaptation (sdeid.memorization.job) into the adapt folder's
memorization.json; the audit, the run report and the publish gate read them from there.
"""
