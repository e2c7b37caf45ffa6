"""Training: a generic `fit` loop (loop.py), one stage per model (vae_stage.py, tumorgen_stage.py),
checkpoints that load as untrusted input (checkpoint.py), torchrun data parallelism
(distributed.py), and loading finished runs for synthesis (run_folder.py: `load_run`)."""
